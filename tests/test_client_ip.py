from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.track.client_ip import ClientIPResolver

PROXIES = ClientIPResolver([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")])


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def test_without_trusted_proxies_the_socket_peer_is_the_client() -> None:
    resolver = ClientIPResolver([])
    assert resolver.resolve("203.0.113.9", h(x_forwarded_for="198.51.100.1")) == "203.0.113.9"


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    assert PROXIES.resolve("203.0.113.9", h(x_forwarded_for="198.51.100.1")) == "203.0.113.9"


def test_x_forwarded_for_is_read_right_to_left_past_trusted_hops() -> None:
    headers = h(x_forwarded_for="6.6.6.6, 198.51.100.1, 10.1.2.3")
    # 6.6.6.6 could have been written by the client itself: only the first untrusted hop counts.
    assert PROXIES.resolve("127.0.0.1", headers) == "198.51.100.1"


def test_several_x_forwarded_for_headers_are_one_list() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-for", b"10.0.0.2")]
    assert PROXIES.resolve("127.0.0.1", headers) == "198.51.100.7"


def test_forwarded_header_with_ipv6_and_ports() -> None:
    headers = h(forwarded='for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.5')
    assert PROXIES.resolve("127.0.0.1", headers) == "2001:db8:cafe::17"
    assert PROXIES.resolve("127.0.0.1", h(forwarded="for=192.0.2.60:8080")) == "192.0.2.60"


def test_forwarded_wins_over_x_forwarded_for() -> None:
    headers = h(forwarded="for=192.0.2.60", x_forwarded_for="198.51.100.1")
    assert PROXIES.resolve("127.0.0.1", headers) == "192.0.2.60"


def test_garbage_stops_at_the_last_trustworthy_address() -> None:
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="unknown")) == "127.0.0.1"
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="198.51.100.1, junk, 10.0.0.1")) == "10.0.0.1"
    assert PROXIES.resolve("127.0.0.1", h(forwarded="for=_hidden")) == "127.0.0.1"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="10.0.0.9, 10.0.0.1")) == "10.0.0.9"


def test_no_peer_is_no_address() -> None:
    assert PROXIES.resolve(None, h(x_forwarded_for="198.51.100.1")) is None


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.sampled_from(["127.0.0.1", "10.9.8.7", "203.0.113.1", "::1", "junk"])),
    st.lists(
        st.tuples(
            st.sampled_from([b"x-forwarded-for", b"forwarded", b"user-agent", b"X-Forwarded-For"]),
            st.binary(max_size=200),
        ),
        max_size=5,
    ),
)
def test_any_headers_give_an_address_or_the_peer_and_never_raise(
    peer: str | None, headers: list[tuple[bytes, bytes]]
) -> None:
    result = PROXIES.resolve(peer, headers)
    if result is not None and result != peer:
        ipaddress.ip_address(result)  # a parsed, valid address
