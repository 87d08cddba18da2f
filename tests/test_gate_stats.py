"""The gate's paired statistics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from curate.gate.stats import bootstrap, mcnemar, min_items


def test_mcnemar_counts_only_the_items_the_models_disagree_on():
    # 20 items: 8 both pass, 2 both fail, 1 lost by the candidate, 9 won
    base = np.array([1] * 8 + [0] * 2 + [1] + [0] * 9, dtype=bool)
    cand = np.array([1] * 8 + [0] * 2 + [0] + [1] * 9, dtype=bool)
    r = mcnemar(base, cand)
    # exact two-sided: 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024
    assert r.p_value == pytest.approx(22 / 1024)
    assert (r.n, r.baseline, r.candidate, r.diff) == (20, 0.45, 0.85, 0.4)
    # the interval: Clopper-Pearson of 9 won of 10 discordant (0.5550, 0.9975 in the
    # tables), each end t mapped to 10/20 * (2t - 1); its ends are where a binomial tail is 2.5%
    assert (r.low, r.high) == (
        pytest.approx(0.5 * (2 * 0.55498 - 1), abs=1e-5),
        pytest.approx(0.5 * (2 * 0.975 ** (1 / 10) - 1), abs=1e-6),
    )
    low = (r.low / 0.5 + 1) / 2  # P(X >= 9 | 10, low) = 0.025
    assert 10 * low**9 * (1 - low) + low**10 == pytest.approx(0.025, abs=1e-9)
    assert not r.worse_than() and r.decidable


def test_a_regression_is_significant_only_beyond_noise():
    base = np.ones(40, dtype=bool)
    noisy = base.copy()
    noisy[:2] = False  # 2 of 40 lost: p = 2 * 0.25 = 0.5
    assert mcnemar(base, noisy).p_value == pytest.approx(0.5)
    assert not mcnemar(base, noisy).worse_than()
    broken = base.copy()
    broken[:12] = False  # 12 lost, none won: p = 2 / 4096
    r = mcnemar(base, broken)
    assert r.p_value == pytest.approx(2 / 4096) and r.worse_than()
    assert r.high < 0 and r.diff == pytest.approx(-0.3)


def test_the_interval_agrees_with_the_exact_test():
    # 3 lost, none won: p = 2 / 8 = 0.25, not significant, so the interval reaches above 0
    base = np.ones(10, dtype=bool)
    cand = base.copy()
    cand[:3] = False
    r = mcnemar(base, cand)
    assert r.p_value == pytest.approx(0.25) and r.low < 0 < r.high and not r.worse_than()
    # 6 lost of 6: p = 2 / 64 < 0.05, significant, the interval below 0
    cand[:6] = False
    r = mcnemar(base, cand)
    assert r.p_value == pytest.approx(2 / 64) and r.high < 0 and r.worse_than()
    # nothing discordant: nothing to tell
    same = mcnemar(base, base)
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)


def test_too_few_items_cannot_decide():
    # at 95%: 2 * 0.5**n < 0.05 needs n >= 6 (2 / 32 = 0.0625 at n = 5)
    assert min_items(0.95) == 6 and min_items(0.99) == 8
    assert not mcnemar(np.ones(5, bool), np.zeros(5, bool)).decidable
    assert mcnemar(np.ones(6, bool), np.zeros(6, bool)).decidable


def test_the_bootstrap_interval_of_a_constant_shift_is_that_shift():
    base = np.linspace(0, 1, 50)
    r = bootstrap(base, base + 0.25)
    assert (r.diff, r.low, r.high) == (
        pytest.approx(0.25),
        pytest.approx(0.25),
        pytest.approx(0.25),
    )
    same = bootstrap(base, base)
    assert (same.low, same.high) == (0.0, 0.0) and same.method == "paired-bootstrap"
    # seeded: the same items give the same interval
    noisy = base + np.random.default_rng(1).normal(0, 0.1, 50)
    assert bootstrap(base, noisy) == bootstrap(base, noisy)


def test_unpaired_scores_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))
