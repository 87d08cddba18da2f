"""Paired comparisons of a candidate with its baseline on the same items.

A gate must fail on a real regression, not on noise: every suite compares the two models
item by item and reports the difference with its interval. Pass/fail items (exact match,
refused or not, valid JSON, stopped) use McNemar's exact test, which looks only at the items
the two models disagree on; graded scores use a paired bootstrap of the items. Too few items
to reach the requested confidence at all is reported as such (`decidable`), and a gate treats
it as a failure rather than as a pass by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Paired:
    n: int  # items scored by both models
    baseline: float  # mean score
    candidate: float
    diff: float  # candidate - baseline
    low: float  # the diff's interval at `confidence`
    high: float
    confidence: float
    method: str  # "mcnemar-exact" or "paired-bootstrap"
    p_value: float | None = None  # two-sided, McNemar only
    decidable: bool = True  # whether n items can reach `confidence` at all

    def worse_than(self, margin: float = 0.0) -> bool:
        """Whether the candidate is significantly more than `margin` below the baseline."""
        return self.high < -margin


def mcnemar(baseline: np.ndarray, candidate: np.ndarray, confidence: float = 0.95) -> Paired:
    """Pass/fail items: the exact two-sided McNemar test (a binomial test on the items only
    one model passed) and the matching exact interval for the difference: Clopper-Pearson
    on the share of those items the candidate won, scaled by their share of all items. The
    interval excludes 0 exactly when the test is significant (a Wald interval does not:
    with 3 items lost and none won it calls a p = 0.25 difference real)."""
    base, cand = _paired(baseline, candidate, bool)
    n = len(base)
    lost = int(np.sum(base & ~cand))  # items the baseline passed and the candidate failed
    won = int(np.sum(~base & cand))
    discordant = lost + won
    p = min(
        1.0, 2 * sum(math.comb(discordant, k) for k in range(min(lost, won) + 1)) / 2**discordant
    )
    diff = (won - lost) / n if n else 0.0
    low_won, high_won = clopper_pearson(won, discordant, confidence)
    scale = discordant / n if n else 0.0
    return Paired(
        n,
        float(base.mean()) if n else 0.0,
        float(cand.mean()) if n else 0.0,
        diff,
        scale * (2 * low_won - 1),
        scale * (2 * high_won - 1),
        confidence,
        "mcnemar-exact",
        p_value=p,
        decidable=n >= min_items(confidence),
    )


def bootstrap(
    baseline: np.ndarray, candidate: np.ndarray, confidence: float = 0.95, seed: int = 0
) -> Paired:
    """Graded items: the percentile interval of the mean difference over resamples of the
    items (both models' scores of an item move together)."""
    base, cand = _paired(baseline, candidate, float)
    n = len(base)
    delta = cand - base
    if n:
        rng = np.random.default_rng(seed)
        means = delta[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        tail = (1 - confidence) / 2 * 100
        low, high = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
    else:
        low = high = 0.0
    return Paired(
        n,
        float(base.mean()) if n else 0.0,
        float(cand.mean()) if n else 0.0,
        float(delta.mean()) if n else 0.0,
        low,
        high,
        confidence,
        "paired-bootstrap",
        decidable=n >= min_items(confidence),
    )


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact interval of a binomial proportion from k of n (both ends 0.5 when n = 0:
    no discordant items say nothing either way)."""
    if n == 0:
        return 0.5, 0.5
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    low = float(beta.ppf(tail, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - tail, k + 1, n - k)) if k < n else 1.0
    return low, high


def min_items(confidence: float) -> int:
    """The fewest items on which a difference can be significant at `confidence`: with n
    items all won by one model, McNemar's p is 2 · 0.5^n."""
    return math.ceil(math.log2(2 / (1 - confidence)))


def _paired(
    baseline: np.ndarray, candidate: np.ndarray, kind: type
) -> tuple[np.ndarray, np.ndarray]:
    base: np.ndarray = np.asarray(baseline, dtype=kind)
    cand: np.ndarray = np.asarray(candidate, dtype=kind)
    if base.shape != cand.shape or base.ndim != 1:
        raise ValueError(f"paired scores differ in shape: {base.shape} vs {cand.shape}")
    return base, cand
