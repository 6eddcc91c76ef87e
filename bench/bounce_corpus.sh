#!/bin/sh
# Gather the public bounce corpora into DEST, from the package registries only:
#   DEST/flufl/         flufl.bounce's test messages (PyPI sdist, GNU Mailman's bounce detectors)
#   DEST/bounce_email/  the `bounced` package's bounce_email samples, bounces and non-bounces (PyPI sdist)
#   DEST/baunsu/        the `baunsu` package's test messages (npm)
#   DEST/salmon/        salmon-mail's test bounce (PyPI sdist, a Postfix DSN)
# Third-party samples: keep DEST outside the repository. Versions: FLUFL_BOUNCE_VERSION (6.0.0),
# BOUNCED_VERSION (0.3.0), BAUNSU_VERSION (0.2.3), SALMON_VERSION (3.3.0). Needs python3 with pip, npm and tar.
# Usage: bench/bounce_corpus.sh DEST, then python bench/bounces.py DEST --sisimai-perl
set -eu
DEST=${1:?usage: bench/bounce_corpus.sh DEST}
FLUFL=${FLUFL_BOUNCE_VERSION:-6.0.0}
BOUNCED=${BOUNCED_VERSION:-0.3.0}
BAUNSU=${BAUNSU_VERSION:-0.2.3}
SALMON=${SALMON_VERSION:-3.3.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work/flufl" "flufl.bounce==$FLUFL"
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work/bounced" "bounced==$BOUNCED"
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work/salmon" "salmon-mail==$SALMON"
mkdir -p "$work/baunsu"
(cd "$work/baunsu" && npm pack --silent "baunsu@$BAUNSU" >/dev/null)
for name in flufl bounced baunsu salmon; do
    for archive in "$work/$name"/*; do tar -xzf "$archive" -C "$work/$name"; done
done

mkdir -p "$DEST/flufl" "$DEST/bounce_email" "$DEST/baunsu" "$DEST/salmon"
find "$work/flufl" -path '*/tests/data/*' -name '*.txt' -exec cp {} "$DEST/flufl/" \;
find "$work/bounced" -path '*/tests/bounce_email/*' -name '*.eml' -exec cp {} "$DEST/bounce_email/" \;
find "$work/baunsu" -path '*/tests/emails/*' -name '*.txt' -exec cp {} "$DEST/baunsu/" \;
find "$work/salmon" -path '*/tests/data/*' -name 'bounce.msg' -exec cp {} "$DEST/salmon/" \;
for name in flufl bounce_email baunsu salmon; do
    echo "$DEST/$name: $(find "$DEST/$name" -type f | wc -l) files"
done
