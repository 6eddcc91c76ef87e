"""The dashboard's charts, drawn as SVG: axes with whole-number counts and labels that are never cut off
or drawn over each other, whatever the data (none, one bucket, a trillion opens, hostile labels)."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deadpixel.reports import analytics
from deadpixel.web import charts, ranges
from deadpixel.web.ticks import count_label, count_ticks, text_width, time_ticks, wrap

SVG = "{http://www.w3.org/2000/svg}"
ZONE = ZoneInfo("Europe/Berlin")


def hours(counts: list[tuple[int, int, int]], start: datetime | None = None) -> list[dict[str, object]]:
    """Analytics' hourly rows from (opens, human, machine) per hour."""
    first = start or datetime(2026, 12, 6, 9, tzinfo=ZONE)
    return [
        {
            "hour": (first + timedelta(hours=i)).isoformat(timespec="minutes"),
            "opens": n,
            "human": h,
            "machine": m,
        }
        for i, (n, h, m) in enumerate(counts)
    ]


def days(counts: list[int], first: date = date(2026, 11, 20)) -> list[dict[str, object]]:
    return [
        {"day": (first + timedelta(days=i)).isoformat(), "opens": n, "human": n, "machine": 0}
        for i, n in enumerate(counts)
    ]


def drawings(markup: str) -> list[ET.Element]:
    """Each SVG in a chart's markup, parsed (so it is well-formed XML)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", markup, re.S)]


def x_labels(svg: ET.Element) -> list[tuple[float, float, str]]:
    """(left, right, text) of each line of the time axis' labels, by the same generous width estimate."""
    size = float(svg.get("font-size", "12"))
    found = []
    for text in svg.iter(f"{SVG}text"):
        if text.get("class") == "x":
            for span in text:
                x, line = float(span.get("x", "0")), span.text or ""
                found.append((x - text_width(line, size) / 2, x + text_width(line, size) / 2, line))
    return found


def y_labels(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "end"]


def assert_readable(markup: str) -> None:
    """Every drawing's axis labels lie inside its viewBox, whole, and apart from each other."""
    for svg in drawings(markup):
        width = float(svg.get("viewBox", "0 0 0 0").split()[2])
        labels = x_labels(svg)
        for left, right, line in labels:
            assert left >= 0 and right <= width, f"{line!r} runs off a {width} px chart"
            assert "…" not in line and "..." not in line
        by_row: dict[float, list[tuple[float, float]]] = {}
        for left, right, _ in labels:
            by_row.setdefault(round((left + right) / 2), []).append((left, right))
        spans = sorted(
            (left, right) for left, right, line in labels if re.fullmatch(r"\d\d:00|[A-Z][a-z]{2} \d+", line)
        )
        for (_, a_right), (b_left, _) in itertools.pairwise(spans):
            assert a_right <= b_left, "two axis labels overlap"


def test_count_ticks_are_whole_numbers_in_round_steps() -> None:
    assert count_ticks(0) == [0, 1]
    assert count_ticks(1) == [0, 1]
    assert count_ticks(3) == [0, 1, 2, 3]
    assert count_ticks(7) == [0, 2, 4, 6, 8]
    assert count_ticks(278) == [0, 100, 200, 300]
    assert count_ticks(10**12, 4) == [0, 5 * 10**11, 10**12]


@given(st.integers(min_value=-5, max_value=10**18), st.integers(min_value=1, max_value=8))
def test_count_ticks_cover_the_top_in_at_most_the_steps_asked(top: int, most: int) -> None:
    ticks = count_ticks(top, most)
    step = ticks[1] - ticks[0]
    assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= most + 1
    assert all(b - a == step for a, b in itertools.pairwise(ticks))
    assert str(step).strip("0") in ("1", "2", "5")


def test_count_labels_say_small_counts_exactly_and_big_ones_briefly() -> None:
    assert [count_label(n) for n in (0, 7, 1250, 9999)] == ["0", "7", "1,250", "9,999"]
    assert [count_label(n) for n in (12_000, 3_500_000, 10**9, 2 * 10**12)] == ["12k", "3.5M", "1B", "2T"]


def test_a_small_count_axis_shows_integers_only() -> None:
    markup = charts.opens_by_hour(hours([(1, 1, 0), (3, 2, 1), (0, 0, 0), (2, 0, 2)]))
    for svg in drawings(markup):
        assert y_labels(svg) == ["0", "1", "2", "3"]


def test_three_days_of_hours_get_whole_labels_that_fit_in_both_drawings() -> None:
    """The old charts cut their hour labels to "10...", "11...": now every label is whole and apart."""
    markup = charts.opens_by_hour(hours([(i % 7, i % 4, i % 7 - i % 4) for i in range(72)]))
    wide, narrow = drawings(markup)
    assert wide.get("class") == "wide" and narrow.get("class") == "narrow"
    assert "Sun 6 Dec" in [line for _, _, line in x_labels(wide)]
    for svg in (wide, narrow):
        lines = [line for _, _, line in x_labels(svg)]
        assert all(re.fullmatch(r"\d\d:00|[A-Z][a-z]{2} \d+ [A-Z][a-z]{2}", x) for x in lines)
    assert len(x_labels(wide)) > len(x_labels(narrow))  # the wide drawing has room for more
    assert_readable(markup)


def test_a_year_of_days_is_labelled_by_month() -> None:
    markup = charts.opens_over_time(days([i % 5 for i in range(366)], date(2026, 1, 1)))
    lines = [line for _, _, line in x_labels(drawings(markup)[1])]
    assert "2026" in lines and set(lines) - {"2026", "2027"} <= {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    }  # fmt: skip
    assert_readable(markup)


def test_every_bucket_has_a_hover_title_and_the_numbers_are_a_table() -> None:
    markup = charts.opens_by_hour(hours([(5, 3, 2), (0, 0, 0), (1, 0, 0)]))
    assert (
        "Sun 6 Dec 2026, 09:00: 5 opens (3 by people, 2 by machines, 0 by yourself / unclassified)" in markup
    )
    wide = drawings(markup)[0]
    assert (
        wide.get("role") == "img"
        and wide.find(f"{SVG}title") is not None
        and wide.find(f"{SVG}desc") is not None
    )
    rows = re.findall(r"<tr><th scope=\"row\">([^<]*)</th>", markup)
    assert rows == ["Sun 6 Dec 2026, 09:00", "Sun 6 Dec 2026, 11:00"]  # hours with opens only
    # people and machines drawn apart: machines hatched, and named in the legend
    assert 'class="machines"' in markup and 'fill="url(#chart-opens-by-hour-wide-machines)"' in markup
    assert "people (human, proxy)" in markup and "machines (prefetch, scanner)" in markup


def test_empty_and_single_bucket_charts() -> None:
    assert "No opens" in charts.time_chart("t", "T", [], "hour")
    assert "No opens" in charts.opens_by_hour(hours([(0, 0, 0)] * 5))
    assert "Nothing to show" in charts.bar_chart("b", "B", [], "opens")
    assert charts.sparkline([]) == ""
    one = charts.opens_over_time(days([4]))
    wide, _ = drawings(one)
    assert [line for _, _, line in x_labels(wide)] == ["Nov 20", "2026"]
    assert_readable(one)


def test_huge_counts_stay_on_the_chart() -> None:
    markup = charts.opens_by_hour(hours([(10**12, 10**12 - 5, 5), (1, 1, 0)]))
    for svg in drawings(markup):
        assert y_labels(svg)[-1] in ("1T", "1.2T", "1.5T", "2T")
        height = float(svg.get("viewBox", "").split()[3])
        for rect in svg.iter(f"{SVG}rect"):
            assert (
                float(rect.get("y", "0")) >= 0
                and float(rect.get("y", "0")) + float(rect.get("height", "0")) <= height
            )
    assert "1,000,000,000,000" in markup


def test_bar_labels_are_wrapped_never_cut_and_data_is_escaped() -> None:
    long = "Webmail (Chrome) on a very long device name that would never fit one line of a narrow chart"
    markup = charts.breakdown_bars("Mail client", [
        {"value": long, "opens": 9}, {"value": "<script>alert(1)</script>", "opens": 2},
        {"value": None, "opens": 1}, {"value": "bell\x07", "opens": 1},
    ])  # fmt: skip
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "unknown" in markup
    (svg,) = drawings(markup)
    shown = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert all(word in shown for word in long.split())
    width = float(svg.get("viewBox", "").split()[2])
    assert all(text_width(t.text or "", 13) <= width for t in svg.iter(f"{SVG}text"))


def test_wrap_breaks_between_words_and_inside_a_word_too_long() -> None:
    assert wrap("a bb ccc", 10, 40) == ["a bb", "ccc"]
    assert wrap("x" * 20, 10, 66) == ["x" * 10, "x" * 10]
    assert wrap("", 10, 50) == [""]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(-3, 10**15), st.integers(-3, 10**15), st.integers(-3, 10**15)), max_size=200
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.booleans(),
)
def test_time_charts_never_raise_and_stay_readable(
    counts: list[tuple[int, int, int]], start: datetime, by_day: bool
) -> None:
    if by_day:
        markup = charts.time_chart(
            "d", "D", charts.buckets(days([n for n, _, _ in counts], start.date()), "day"), "day"
        )
    else:
        markup = charts.time_chart("h", "H", charts.buckets(hours(counts, start), "hour"), "hour")
    assert_readable(markup)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=80), st.integers(-5, 10**15)), max_size=12))
def test_bar_charts_never_raise_and_are_well_formed(rows: list[tuple[str, int]]) -> None:
    markup = charts.bar_chart("b", "B", rows, "opens")
    if rows:
        assert len(drawings(markup)) == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.floats(0.05, 400), st.sampled_from(["hour", "day"]))
def test_time_ticks_never_overlap(n: int, bucket_px: float, unit: str) -> None:
    first = datetime(2026, 3, 28, tzinfo=ZONE)
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    ticks = time_ticks([first + i * step for i in range(n)], unit, bucket_px, 12)
    assert ticks and ticks[0].index >= 0
    for a, b in itertools.pairwise(ticks):
        assert (b.index - a.index) * bucket_px >= (a.width(12) + b.width(12)) / 2


def test_a_range_window_charts_its_own_hours_and_days() -> None:
    now = datetime(2026, 12, 6, 15, 20, tzinfo=ZONE).timestamp()
    slots = [
        (datetime(2026, 12, 6, 9, 15, tzinfo=ZONE), 4, 3, 1),
        (datetime(2026, 12, 6, 14, 45, tzinfo=ZONE), 1, 1, 0),
    ]
    window = ranges.parse("24h")
    assert window is not None and ranges.parse("all") is ranges.DEFAULT and ranges.parse("1y") is None
    found = analytics._over_time(slots, ZONE, window.window(now))
    assert len(found["hourly"]) == 25 and found["hourly"][-1]["hour"] == "2026-12-06T15:00+01:00"
    assert [d["day"] for d in found["daily"]] == ["2026-12-05", "2026-12-06"]
    assert sum(h["opens"] for h in found["hourly"]) == 5
