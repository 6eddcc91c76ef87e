#!/bin/sh
# Unpack a current Sisimai (pure Perl) into DEST from Debian's binary package, for bench/bounces.py:
#   bench/sisimai_fetch.sh DEST
#   python bench/bounces.py CORPUS... --sisimai-perl --sisimai-lib DEST/usr/share/perl5
# Debian stable may carry an older Sisimai (bookworm: 4.25); this takes the .deb of SISIMAI_DEB_VERSION
# (5.7.2-1) from the pool of the Debian mirror apt uses here (DEBIAN_MIRROR to choose another) and checks
# its SHA-256 (SISIMAI_DEB_SHA256; pinned for 5.7.2-1). Keep DEST outside the repository: it is third-party
# code. Sisimai 5 also needs libclass-accessor-lite-perl and libjson-perl (apt-get install them).
# Needs curl, dpkg-deb and sha256sum.
set -eu
DEST=${1:?usage: bench/sisimai_fetch.sh DEST}
VERSION=${SISIMAI_DEB_VERSION:-5.7.2-1}
if [ "$VERSION" = 5.7.2-1 ]; then
    SHA256=${SISIMAI_DEB_SHA256:-fa4e27af981ad872c21151d4423cf4c361329c9c367ab93d2b9c4af0996dbcae}
else
    SHA256=${SISIMAI_DEB_SHA256:?set SISIMAI_DEB_SHA256 for a version other than 5.7.2-1}
fi
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    # The first Debian archive apt is set up with (deb822 .sources or a one-line sources.list).
    DEBIAN_MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -Eo 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ' | sed 's:/$::')
fi
: "${DEBIAN_MIRROR:?no Debian mirror in apt's sources: set DEBIAN_MIRROR}"
deb="libsisimai-perl_${VERSION}_all.deb"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

curl -fsSL -o "$work/$deb" "$DEBIAN_MIRROR/pool/main/libs/libsisimai-perl/$deb"
echo "$SHA256  $work/$deb" | sha256sum -c --quiet -
mkdir -p "$DEST"
dpkg-deb -x "$work/$deb" "$DEST"
lib="$DEST/usr/share/perl5"
echo "Sisimai $(perl -I"$lib" -MSisimai -e 'print $Sisimai::VERSION') in $lib"
for module in Class::Accessor::Lite JSON; do
    perl -M"$module" -e 1 2>/dev/null || echo "missing Perl module $module (Debian: see above)" >&2
done
