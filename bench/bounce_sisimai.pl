#!/usr/bin/perl
# What Sisimai reads from each file named on the command line: one JSON line per file, with the file's
# path as given and one entry per recipient (address, status, reason, hard, feedbacktype, ...).
# Works with Sisimai 4.x (Sisimai->make, softbounce) and 5.x (Sisimai->rise, hardbounce); "hard" is the
# verdict in one form for both: 1 hard, 0 soft, null for a reason that is no failure (delivered, feedback,
# vacation). "--version" prints the Sisimai version read. Used by bench/bounces.py --sisimai-perl, which
# passes the library path (--sisimai-lib, for a Sisimai unpacked by bench/sisimai_fetch.sh) as -I.
# Debian: apt-get install libsisimai-perl (4.25 in bookworm).
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my $version = "$Sisimai::VERSION";
if (@ARGV && $ARGV[0] eq '--version') {
    print "$version\n";
    exit 0;
}
my ($major) = $version =~ /^v?(\d+)/;
my $five = $major >= 5;
my %NOT_A_FAILURE = map { $_ => 1 } qw(delivered feedback vacation);

sub hard {
    my ($d) = @_;
    return undef if $NOT_A_FAILURE{ lc($d->reason // '') };
    if ($five) { return $d->hardbounce ? 1 : 0 }
    my $soft = $d->softbounce;
    return $soft == 0 ? 1 : $soft == 1 ? 0 : undef;
}

my $json = JSON::PP->new->canonical->ascii;
for my $file (@ARGV) {
    my $out = { file => $file, results => [] };
    my $data = eval {
        $five ? Sisimai->rise($file, delivered => 1, vacation => 1) : Sisimai->make($file, delivered => 1)
    };
    $out->{error} = "$@" if $@;
    for my $d (@{ $data || [] }) {
        push @{ $out->{results} }, {
            address => $d->recipient->address, status => $d->deliverystatus, reason => lc($d->reason // ''),
            hard => hard($d), feedbacktype => $d->feedbacktype, action => $d->action,
            smtpagent => $five ? $d->decodedby : $d->smtpagent, diagnostic => $d->diagnosticcode,
            sisimai => $version,
        };
    }
    print $json->encode($out), "\n";
}
