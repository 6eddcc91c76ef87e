#!/usr/bin/perl
# What Sisimai reads from each file named on the command line: one JSON line per file, with the file's
# path as given and one entry per recipient (address, status, reason, softbounce, feedbacktype, ...).
# Used by bench/bounces.py --sisimai-perl; Debian: apt-get install libsisimai-perl.
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my $json = JSON::PP->new->canonical->ascii;
for my $file (@ARGV) {
    my $out = { file => $file, results => [] };
    my $data = eval { Sisimai->make($file, delivered => 1) };
    $out->{error} = "$@" if $@;
    for my $d (@{ $data || [] }) {
        push @{ $out->{results} }, {
            address => $d->recipient->address, status => $d->deliverystatus, reason => $d->reason,
            softbounce => $d->softbounce, feedbacktype => $d->feedbacktype, smtpagent => $d->smtpagent,
            action => $d->action, diagnostic => $d->diagnosticcode,
        };
    }
    print $json->encode($out), "\n";
}
