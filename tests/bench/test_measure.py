"""pcsim.bench.measure: the per-repetition ratio statistics every table reports, against numpy."""

import numpy as np
import pytest

from pcsim.bench.measure import summary


def test_ratios_pair_each_time_with_the_baseline_of_the_same_repetition():
    rng = np.random.default_rng(0)
    bp = rng.uniform(1.0, 2.0, 9)
    rule = bp * rng.uniform(0.9, 1.3, 9)
    # the rule skipped repetitions 2 and 5 (a slow rule runs fewer): its ratios use the others only
    kept = [r for r in range(9) if r not in (2, 5)]
    times = {"bp": list(enumerate(bp)), "rule": [(r, rule[r]) for r in kept]}
    s = summary(times, "bp")
    ratios = rule[kept] / bp[kept]
    assert s["rule"]["ratio_to_bp"] == pytest.approx(np.median(ratios), rel=1e-15)
    # statistics.quantiles' default ('exclusive') is numpy's 'weibull' method
    q1, q3 = np.percentile(ratios, [25, 75], method="weibull")
    assert (s["rule"]["ratio_q1"], s["rule"]["ratio_q3"]) == pytest.approx((q1, q3), rel=1e-14)
    assert s["rule"]["median_ms"] == pytest.approx(1e3 * np.median(rule[kept]), rel=1e-15)
    assert s["rule"]["runs"] == 7
    assert s["bp"]["ratio_to_bp"] == 1.0


def test_one_repetition_has_no_quartiles():
    s = summary({"bp": [(0, 2.0)], "rule": [(0, 3.0)]}, "bp")
    assert s["rule"]["ratio_to_bp"] == 1.5
    assert np.isnan(s["rule"]["ratio_q1"]) and np.isnan(s["rule"]["ratio_q3"])
