"""The A/B decision model, the test's split and UTM tagging: pure functions, checked with exact cases and
properties (hypothesis)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.mail.utm import Utm, add_utm
from deadpixel.reports.abtest import DECIDED, TIE, UNDECIDED, Variant, prob_greater, standing
from deadpixel.send.abtest import parse_duration, split


def ab(a: tuple[int, int], b: tuple[int, int], metric: str = "human-open-rate") -> object:
    return standing([Variant("A", a[1], a[0], 0), Variant("B", b[1], b[0], 0)], metric)


def test_the_briefs_cases() -> None:
    clear = standing([Variant("A", 10, 1, 0), Variant("B", 10, 8, 0)])
    assert clear.status == DECIDED and clear.leader == "B" and clear.decided
    assert clear.statement == "B is better with 99.9% probability (by human open rate)"
    level = standing([Variant("A", 10, 5, 0), Variant("B", 10, 5, 0)])
    assert level.status == TIE and level.leader is None and level.probability == pytest.approx(0.5)
    little = standing([Variant("A", 2, 1, 0), Variant("B", 2, 0, 0)])
    assert little.status == UNDECIDED and little.leader == "A" and not little.decided
    assert little.statement == "too little data to call: A leads with 80% probability (by human open rate)"
    nothing = standing([Variant("A", 0, 0, 0), Variant("B", 0, 0, 0)])
    assert nothing.status == UNDECIDED and nothing.probability == pytest.approx(0.5)


def test_the_metric_decides_which_counts_are_compared() -> None:
    # A is opened more, B clicked more.
    variants = [Variant("A", 100, 60, 2), Variant("B", 100, 30, 20)]
    assert standing(variants, "human-open-rate").leader == "A"
    by_clicks = standing(variants, "click-rate")
    assert by_clicks.leader == "B" and by_clicks.decided and "click rate" in by_clicks.statement


def test_three_variants_need_the_leader_to_beat_each() -> None:
    close = standing([Variant("A", 100, 40, 0), Variant("B", 100, 38, 0), Variant("C", 100, 5, 0)])
    assert close.leader == "A" and close.beats["C"] > 0.999 and close.beats["B"] < 0.95
    assert not close.decided and close.probability == close.beats["B"]


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="more successes"):
        standing([Variant("A", 1, 2, 0), Variant("B", 1, 0, 0)])
    with pytest.raises(ValueError, match="two variants"):
        standing([Variant("A", 1, 1, 0)])
    with pytest.raises(ValueError, match="metric"):
        standing([Variant("A", 1, 1, 0), Variant("B", 1, 1, 0)], "opens")


def _integrated(a: tuple[int, int], b: tuple[int, int], steps: int = 4000) -> float:
    """P(p_a > p_b) by the midpoint rule over the joint density: the exact formula's independent check."""
    import math

    def density(s: int, n: int, x: float) -> float:
        return math.exp(
            math.lgamma(n + 2) - math.lgamma(s + 1) - math.lgamma(n - s + 1)
            + s * math.log(x) + (n - s) * math.log(1 - x)
        )  # fmt: skip

    xs = [(i + 0.5) / steps for i in range(steps)]
    fb = [density(*b, x) / steps for x in xs]
    below, total = 0.0, 0.0
    for x, cumulative in zip(xs, _running(fb), strict=True):
        below += density(*a, x) / steps * cumulative
        total += density(*a, x) / steps
    return below / total


def _running(values: list[float]) -> list[float]:
    out, acc = [], 0.0
    for v in values:
        out.append(acc + v / 2)
        acc += v
    return out


@pytest.mark.parametrize(
    ("a", "b"), [((8, 10), (1, 10)), ((3, 7), (4, 9)), ((0, 5), (2, 5)), ((12, 40), (9, 40))]
)
def test_the_closed_form_agrees_with_numeric_integration(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert prob_greater(*a, *b) == pytest.approx(_integrated(a, b), abs=2e-3)


counts = st.integers(0, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@given(counts, counts)
@settings(max_examples=100, deadline=None)
def test_probabilities_are_complementary_and_bounded(a: tuple[int, int], b: tuple[int, int]) -> None:
    forward, backward = prob_greater(*a, *b), prob_greater(*b, *a)
    assert 0.0 <= forward <= 1.0 and 0.0 <= backward <= 1.0
    assert forward + backward == pytest.approx(1.0, abs=1e-9)
    if a == b:
        assert forward == pytest.approx(0.5, abs=1e-9)


@given(counts, counts)
@settings(max_examples=100, deadline=None)
def test_standing_is_symmetric_in_the_variants(a: tuple[int, int], b: tuple[int, int]) -> None:
    one = standing([Variant("A", a[1], a[0], 0), Variant("B", b[1], b[0], 0)])
    other = standing([Variant("B", b[1], b[0], 0), Variant("A", a[1], a[0], 0)])
    assert (one.leader, one.status, one.statement) == (other.leader, other.status, other.statement)
    assert one.probability == pytest.approx(other.probability, abs=1e-12)
    assert 0.5 - 1e-9 <= one.probability <= 1.0


@given(counts, counts)
@settings(max_examples=100, deadline=None)
def test_more_successes_never_lower_the_chance_of_being_better(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    s, n = a
    if s < n:
        assert prob_greater(s + 1, n, *b) >= prob_greater(s, n, *b) - 1e-12
    if b[0] < b[1]:
        assert prob_greater(*a, b[0] + 1, b[1]) <= prob_greater(*a, *b) + 1e-12
    if s:  # one more message without an open
        assert prob_greater(s, n + 1, *b) <= prob_greater(s, n, *b) + 1e-12


def test_large_tests_are_exact_and_quick() -> None:
    p = prob_greater(30_500, 100_000, 30_000, 100_000)
    assert 0.99 < p < 1.0  # +0.5 points on 100,000 each is nearly sure
    assert prob_greater(30_000, 100_000, 30_000, 100_000) == pytest.approx(0.5, abs=1e-9)


# --- the split ----------------------------------------------------------------------------------------------


@given(
    st.sets(st.integers(0, 10**6).map(lambda i: f"r{i}@example.org"), max_size=200),
    st.floats(0.01, 1.0),
    st.integers(2, 4),
    st.text(max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_the_split_is_even_sized_and_fixed_by_its_seed(
    keys: set[str], share: float, n: int, seed: str
) -> None:
    labels = "ABCD"[:n]
    assigned = split(sorted(keys), labels, share, seed)
    assert split(sorted(keys, reverse=True), labels, share, seed) == assigned  # order of the list: no matter
    assert set(assigned) <= keys
    assert len(assigned) == min(len(keys), max(n, round(len(keys) * share)))
    sizes = [list(assigned.values()).count(label) for label in labels]
    assert max(sizes) - min(sizes) <= 1


def test_the_split_is_random_between_seeds() -> None:
    keys = [f"r{i}@example.org" for i in range(100)]
    assert split(keys, "AB", 0.2, "one") != split(keys, "AB", 0.2, "two")


@pytest.mark.parametrize(("text", "seconds"), [("4h", 14400), ("90m", 5400), ("1.5d", 129600), ("30", 30)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "4w", "-1h", "0", "31d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- UTM ----------------------------------------------------------------------------------------------------

TAGS = Utm("Spring sale & more/ü")


def test_utm_tags_are_added_after_the_query_and_before_the_fragment() -> None:
    assert add_utm("https://shop.example/a?x=1#top", TAGS) == (
        "https://shop.example/a?x=1&utm_source=deadpixel&utm_medium=email"
        "&utm_campaign=Spring%20sale%20%26%20more%2F%C3%BC#top"
    )
    assert add_utm("https://bücher.example/p", Utm("c", "news")).startswith(
        "https://bücher.example/p?utm_source=news&"
    )
    assert add_utm("mailto:ann@example.org", TAGS) == "mailto:ann@example.org"


def test_a_links_own_parameters_win() -> None:
    kept = add_utm("https://shop.example/?utm_source=partner&utm%5Fmedium=print", TAGS)
    assert (
        kept
        == "https://shop.example/?utm_source=partner&utm%5Fmedium=print&utm_campaign=Spring%20sale%20%26%20more%2F%C3%BC"
    )
    whole = "https://shop.example/?utm_source=a&utm_medium=b&utm_campaign=c#x"
    assert add_utm(whole, TAGS) == whole


query_text = st.lists(
    st.sampled_from([*"abcxyz019-_.~%+=&;ü ", "%20", "%26", "%3D", "utm_source=", "utm_medium"]),
    max_size=20,
).map("".join)
hosts = st.sampled_from(
    ["shop.example", "bücher.example", "xn--bcher-kva.example", "[2001:db8::1]:8443", "a.b"]
)


@given(hosts, st.text(alphabet="abc/-_.%", max_size=12), query_text, st.none() | query_text)
@settings(max_examples=150, deadline=None)
def test_tagging_keeps_every_byte_of_the_url_and_adds_only_what_is_missing(
    host: str, path: str, query: str, fragment: str | None
) -> None:
    url = (
        f"https://{host}/{path}"
        + (f"?{query}" if query else "")
        + (f"#{fragment}" if fragment is not None else "")
    )
    tagged = add_utm(url, TAGS)
    head = url.split("#", 1)[0]
    assert tagged.startswith(head)  # scheme, host (IDN as written), path and the whole old query kept
    if fragment is not None:
        assert tagged.endswith(f"#{fragment}")
    assert add_utm(tagged, TAGS) == tagged  # idempotent: a tagged link is never tagged twice
    parts = urlsplit(tagged)
    assert parts.netloc == urlsplit(url).netloc
    before = {k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    after = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in TAGS.pairs():
        assert name in after
        if name not in before and not any(p.split("=", 1)[0] == name for p in urlsplit(url).query.split("&")):
            assert after[name] == value  # ours, decoded back exactly
