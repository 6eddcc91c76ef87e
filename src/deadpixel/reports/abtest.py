"""Which variant of an A/B test is better, and how sure we can be: a pure model, no database.

Each variant's rate (human opens or human clicks over messages sent) gets a Beta posterior from a uniform
prior: Beta(1 + successes, 1 + failures). The probability that the leader's true rate is above another
variant's is computed exactly (Evan Miller's closed form for integer Beta parameters, summed in log space),
so the same counts always give the same answer and no test depends on random sampling. A test is decided
when the leader beats every other variant with at least ``CONFIDENCE``: the model's confidence, not a minimum
count, says when there is enough data (8 of 10 against 1 of 10 is decided; 1 of 2 against 0 of 2 is not).
See docs/decisions/2026-12-06-ab-decision-model.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
METRICS = ("human-open-rate", "click-rate")
DEFAULT_METRIC = METRICS[0]

DECIDED, TIE, UNDECIDED = "decided", "tie", "too little data"


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant's counts: messages sent, messages a person opened, messages with a human click."""

    label: str
    sent: int
    human_opens: int
    clicks: int

    def successes(self, metric: str) -> int:
        return self.human_opens if metric == "human-open-rate" else self.clicks


@dataclass(frozen=True, slots=True)
class Standing:
    """Each variant's rate, the leader and how likely it is to be really better than each other one."""

    metric: str
    rates: dict[str, float]
    leader: str | None
    beats: dict[str, float]  # other label -> P(leader's rate > that one's)
    probability: float  # the smallest of ``beats``: P that the leader beats its closest rival
    status: str  # DECIDED, TIE or UNDECIDED
    statement: str

    @property
    def decided(self) -> bool:
        return self.status == DECIDED


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _prob_b_above_a(a_alpha: int, a_beta: int, b_alpha: int, b_beta: int) -> float:
    """P(X_b > X_a) for X ~ Beta(alpha, beta), exact for integer parameters: a sum of ``b_alpha`` terms."""
    base = _log_beta(a_alpha, a_beta)
    terms = [
        _log_beta(a_alpha + i, a_beta + b_beta) - math.log(b_beta + i) - _log_beta(1 + i, b_beta) - base
        for i in range(b_alpha)
    ]
    if not terms:
        return 0.0
    top = max(terms)
    return math.exp(top) * math.fsum(math.exp(t - top) for t in terms)


def prob_greater(a_successes: int, a_trials: int, b_successes: int, b_trials: int) -> float:
    """P(rate a > rate b) under uniform priors, in [0, 1]. Sums over the side with fewer successes, so a
    large test costs as many terms as the smaller success count."""
    for value in (a_successes, a_trials, b_successes, b_trials):
        if value < 0:
            raise ValueError("counts cannot be negative")
    if a_successes > a_trials or b_successes > b_trials:
        raise ValueError("more successes than trials")
    a = (1 + a_successes, 1 + a_trials - a_successes)
    b = (1 + b_successes, 1 + b_trials - b_successes)
    # P(a > b) summed over a's successes, or 1 - P(b > a) summed over b's: whichever is fewer terms.
    p = _prob_b_above_a(*b, *a) if a_successes <= b_successes else 1.0 - _prob_b_above_a(*a, *b)
    return min(1.0, max(0.0, p))


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def standing(variants: Sequence[Variant], metric: str = DEFAULT_METRIC) -> Standing:
    """Rates, leader and the plain statement for two or more variants, by ``metric`` (one of METRICS)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    if len(variants) < 2:
        raise ValueError("an A/B test needs two variants or more")
    if any(v.successes(metric) > v.sent for v in variants):
        raise ValueError("more successes than messages sent")
    rates = {v.label: rate(v.successes(metric), v.sent) for v in variants}
    leader, beats = _leader(variants, metric)
    probability = min(beats.values())
    what = "human open rate" if metric == "human-open-rate" else "click rate"
    level = all(rates[v.label] == rates[leader.label] for v in variants)
    if level and leader.successes(metric) and all(v.sent for v in variants):  # nobody opening is no tie yet
        labels = " and ".join(sorted(v.label for v in variants))
        return Standing(metric, rates, None, beats, probability, TIE,
                        f"a tie: {labels} have the same {what} ({rates[leader.label]:.0%})")  # fmt: skip
    percent = _percent(probability)
    if probability >= CONFIDENCE:
        statement = f"{leader.label} is better with {percent} probability (by {what})"
        return Standing(metric, rates, leader.label, beats, probability, DECIDED, statement)
    statement = f"too little data to call: {leader.label} leads with {percent} probability (by {what})"
    return Standing(metric, rates, leader.label, beats, probability, UNDECIDED, statement)


def _leader(variants: Sequence[Variant], metric: str) -> tuple[Variant, dict[str, float]]:
    """The variant the model favours, and P(it beats each other one).

    Start from the highest posterior mean (the label breaks ties, so the order variants are given in does
    not matter); while another variant is more likely than not to be better, it leads instead. With two
    variants the leader's probability is therefore never below one half.
    """

    def mean(v: Variant) -> float:
        return (1 + v.successes(metric)) / (2 + v.sent)

    def beaten(leader: Variant) -> dict[str, float]:
        return {
            v.label: prob_greater(leader.successes(metric), leader.sent, v.successes(metric), v.sent)
            for v in variants
            if v is not leader
        }

    leader = max(variants, key=lambda v: (mean(v), [-ord(c) for c in v.label]))
    beats = beaten(leader)
    for _ in variants:  # bounded: three variants could in principle each beat the next
        better = [v for v in variants if v is not leader and beats[v.label] < 0.5]
        if not better:
            break
        leader = min(better, key=lambda v: (beats[v.label], v.label))
        beats = beaten(leader)
    return leader, beats


def _percent(p: float) -> str:
    """Whole percent, but never rounded up to a certainty the model does not have (99.96% is "99.9%")."""
    if p >= 0.995 or p < 0.005:
        return f"{math.floor(p * 1000) / 10:.1f}%"
    return f"{math.floor(p * 100):.0f}%"
