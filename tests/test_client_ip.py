from __future__ import annotations

import gc
import ipaddress
import tracemalloc
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.track.client_ip import MAX_CACHED_VALUE, MAX_HOPS, ClientIPResolver

OURS = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]
PROXIES = ClientIPResolver(OURS)
FORWARDED = ClientIPResolver(OURS, "forwarded")
REAL_IP = ClientIPResolver(OURS, "x-real-ip")


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
    assert FORWARDED.resolve("127.0.0.1", headers) == "2001:db8:cafe::17"
    assert FORWARDED.resolve("127.0.0.1", h(forwarded="for=192.0.2.60:8080")) == "192.0.2.60"


# What a client can send through nginx or Caddy: its own Forwarded, X-Real-IP and friends pass untouched.
CLIENT_CLAIMS = {
    "x_forwarded_for": "17.58.0.1",
    "forwarded": "for=17.58.0.1",
    "x_real_ip": "17.58.0.1",
    "true_client_ip": "17.58.0.1",
    "cf_connecting_ip": "17.58.0.1",
}


def test_only_the_named_header_is_read() -> None:
    """The attack of issue 21: a reader behind the documented nginx sends ``Forwarded: for=17.58.0.1``."""
    assert PROXIES.resolve("127.0.0.1", h(forwarded="for=17.58.0.1", x_forwarded_for="198.51.100.1")) == (
        "198.51.100.1"
    )
    assert FORWARDED.resolve("127.0.0.1", h(forwarded="for=192.0.2.60", x_forwarded_for="17.58.0.1")) == (
        "192.0.2.60"
    )
    assert REAL_IP.resolve("127.0.0.1", h(x_real_ip="192.0.2.61", forwarded="for=17.58.0.1")) == "192.0.2.61"
    for name in ("forwarded", "x_real_ip", "true_client_ip", "cf_connecting_ip"):
        claim = {name: CLIENT_CLAIMS[name]}
        assert PROXIES.resolve("127.0.0.1", h(**claim, x_forwarded_for="17.58.0.1, 198.51.100.1")) == (
            "198.51.100.1"
        )


def test_the_proxy_appended_hop_wins_over_what_the_client_wrote() -> None:
    # nginx's $proxy_add_x_forwarded_for: the client's own header, then the address nginx saw.
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="17.58.0.1, 198.51.100.1")) == "198.51.100.1"
    assert FORWARDED.resolve("127.0.0.1", h(forwarded="for=17.58.0.1, for=198.51.100.1")) == "198.51.100.1"
    assert REAL_IP.resolve("127.0.0.1", [(b"x-real-ip", b"17.58.0.1"), (b"x-real-ip", b"198.51.100.1")]) == (
        "198.51.100.1"
    )


def test_garbage_stops_at_the_last_trustworthy_address() -> None:
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="unknown")) == "127.0.0.1"
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="198.51.100.1, junk, 10.0.0.1")) == "10.0.0.1"
    assert FORWARDED.resolve("127.0.0.1", h(forwarded="for=_hidden")) == "127.0.0.1"
    assert FORWARDED.resolve("127.0.0.1", h(forwarded="for=198.51.100.1, proto=https")) == "127.0.0.1"


def test_only_the_last_hops_are_read() -> None:
    deep = ", ".join(["10.0.0.1"] * (MAX_HOPS + 5))
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="198.51.100.1, " + deep)) == "10.0.0.1"
    hops = ", ".join(["198.51.100.1"] + ["10.0.0.1"] * (MAX_HOPS - 1))
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for=hops)) == "198.51.100.1"


def test_long_headers_resolve_the_same_without_the_cache() -> None:
    resolver = ClientIPResolver(OURS)
    padding = ", ".join(f"192.0.2.{i}" for i in range(200))
    assert resolver.resolve("127.0.0.1", h(x_forwarded_for=padding + ", 198.51.100.1, 10.0.0.3")) == (
        "198.51.100.1"
    )
    assert resolver.resolve("127.0.0.1", h(x_forwarded_for="X" * 12_000)) == "127.0.0.1"
    assert resolver.cache_info().currsize == 0


def _held_by_cache(resolver: ClientIPResolver, count: int, value: Callable[[int], bytes]) -> int:
    """Bytes still allocated after ``count`` requests, each with its own header made as it arrives."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            resolver.resolve("127.0.0.1", [(b"x-forwarded-for", value(i))])
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_unique_long_headers_do_not_fill_memory() -> None:
    """Issue 21: 6,000 pixel hits with unique 12 KB X-Forwarded-For headers held 55 MiB in the cache."""
    resolver = ClientIPResolver(OURS)
    held = _held_by_cache(resolver, 6000, lambda i: f"{i}".encode() + b"1" * 12_000 + b", 198.51.100.1")
    assert held < 1 << 20, f"{held / 2**20:.1f} MiB held after 6,000 long headers"


def test_the_cache_is_bounded_in_bytes_at_its_cap() -> None:
    """Filled to its cap with the longest values it keeps, the cache stays within ~0.5 KiB an entry."""
    resolver = ClientIPResolver(OURS, cache_size=4096)

    def longest(i: int) -> bytes:
        value = f"2001:db8:{i:x}::1, 198.51.100.1, ".encode()
        return value + b" " * (MAX_CACHED_VALUE - len(value))

    held = _held_by_cache(resolver, 5000, longest)
    assert resolver.cache_info().currsize == 4096
    assert held < 4096 * 512, f"{held / 4096:.0f} bytes an entry"


def test_a_short_header_is_a_cache_hit() -> None:
    resolver = ClientIPResolver(OURS)
    headers = [(b"host", b"t.example.com"), (b"user-agent", b"Mail"), (b"x-forwarded-for", b"198.51.100.1")]
    assert resolver.resolve("127.0.0.1", headers) == "198.51.100.1"
    assert resolver.resolve("127.0.0.1", headers) == "198.51.100.1"
    assert resolver.cache_info().hits == 1


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert PROXIES.resolve("127.0.0.1", h(x_forwarded_for="10.0.0.9, 10.0.0.1")) == "10.0.0.9"


def test_trusts_says_whether_a_peers_headers_are_believed() -> None:
    assert PROXIES.trusts("127.0.0.1") and PROXIES.trusts("10.1.2.3")
    assert not PROXIES.trusts("203.0.113.9") and not PROXIES.trusts(None) and not PROXIES.trusts("junk")


def test_no_peer_is_no_address() -> None:
    assert PROXIES.resolve(None, h(x_forwarded_for="198.51.100.1")) is None


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.sampled_from(["127.0.0.1", "10.9.8.7", "203.0.113.1", "::1", "junk"])),
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"x-forwarded-for", b"forwarded", b"user-agent", b"X-Forwarded-For", b"x-real-ip"]
            ),
            st.binary(max_size=200),
        ),
        max_size=5,
    ),
)
def test_any_headers_give_an_address_or_the_peer_and_never_raise(
    peer: str | None, headers: list[tuple[bytes, bytes]]
) -> None:
    for resolver in (PROXIES, FORWARDED, REAL_IP):
        result = resolver.resolve(peer, headers)
        if result is not None and result != peer:
            ipaddress.ip_address(result)  # a parsed, valid address
