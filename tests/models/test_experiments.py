"""The A/B table: Wilson and Newcombe intervals, lifts over the hold-out, segments, weighting, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from models.experiments import arm_table, difference_interval, lift_summary, wilson_interval


def _logs(rates: dict[str, float], n: int, seed: int, segments: int = 1) -> pd.DataFrame:
    """Simulated decisions: `n` per channel per segment, label ~ Bernoulli(rates[channel])."""
    rng = np.random.default_rng(seed)
    channel = np.tile(np.repeat(list(rates), n), segments)
    segment = np.repeat([f"s{i:03d}" for i in range(segments)], n * len(rates))
    p = np.array([rates[c] for c in channel])
    return pd.DataFrame({"segment": segment, "channel": channel, "label": (rng.random(len(p)) < p).astype(int)})


def _fixed(counts: dict[tuple[str, str], tuple[int, int]]) -> pd.DataFrame:
    """Exact logs: for each (segment, channel), `responders` ones out of `n` rows."""
    rows = [{"employment": s, "channel": c, "label": int(i < k)} for (s, c), (k, n) in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (3, 47), (1, 1000)])
def test_wilson_interval_matches_scipy_binomtest(k, n):
    low, high = wilson_interval(k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_of_no_responders_out_of_ten_is_zero_to_0_2775():
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.27753, abs=1e-5)


@pytest.mark.parametrize(("k1", "n1", "k0", "n0", "low", "high"), [
    (56, 70, 48, 80, 0.0524, 0.3339),   # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
])
def test_difference_interval_matches_newcombes_published_hybrid_score_values(k1, n1, k0, n0, low, high):
    got = difference_interval(k1, n1, k0, n0)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_clearly_better_arm_is_significant_and_interval_covers_true_lift():
    table = arm_table(_logs({"none": 0.10, "sms": 0.20}, n=2000, seed=0))
    sms = table.set_index("channel").loc["sms"]
    assert bool(sms["significant"])
    assert sms["lift_low"] < 0.10 < sms["lift_high"]
    assert sms["lift"] == pytest.approx(sms["rate"] - table.set_index("channel").loc["none", "rate"])


def test_identical_arm_is_not_significant_and_interval_covers_zero():
    table = arm_table(_logs({"none": 0.15, "sms": 0.15}, n=2000, seed=2))
    sms = table.set_index("channel").loc["sms"]
    assert not bool(sms["significant"])
    assert sms["lift_low"] < 0.0 < sms["lift_high"]


def test_lift_interval_covers_true_difference_about_95_percent_of_the_time():
    table = arm_table(_logs({"none": 0.08, "phone": 0.12}, n=400, seed=3, segments=400), segment="segment")
    phone = table[table["channel"] == "phone"]
    covered = ((phone["lift_low"] < 0.04) & (phone["lift_high"] > 0.04)).mean()
    assert 0.92 <= covered <= 0.98


def test_identical_arms_are_flagged_significant_about_5_percent_of_the_time():
    table = arm_table(_logs({"none": 0.1, "email": 0.1}, n=300, seed=4, segments=400), segment="segment")
    false_alarms = table.loc[table["channel"] == "email", "significant"].mean()
    assert 0.02 <= false_alarms <= 0.08


def test_holdout_row_has_zero_lift_and_is_not_significant():
    table = arm_table(_logs({"none": 0.1, "sms": 0.3}, n=500, seed=5))
    hold = table[table["holdout"]]
    assert hold["channel"].tolist() == ["none"]
    assert hold[["lift", "lift_low", "lift_high"]].to_numpy().tolist() == [[0.0, 0.0, 0.0]]
    assert not hold["significant"].any()


def test_each_segment_is_compared_with_its_own_holdout():
    logs = _fixed({("salaried", "none"): (10, 100), ("salaried", "sms"): (30, 100),
                   ("retired", "none"): (50, 100), ("retired", "sms"): (50, 100), ("retired", "phone"): (70, 100)})
    table = arm_table(logs, segment="employment")
    assert list(zip(table["segment"], table["channel"], strict=True)) == [
        ("retired", "none"), ("retired", "phone"), ("retired", "sms"), ("salaried", "none"), ("salaried", "sms")]
    lift = table.set_index(["segment", "channel"])["lift"]
    assert lift[("salaried", "sms")] == pytest.approx(0.2)
    assert lift[("retired", "sms")] == pytest.approx(0.0)
    assert lift[("retired", "phone")] == pytest.approx(0.2)
    assert table["n"].tolist() == [100] * 5
    assert table["responders"].tolist() == [50, 70, 50, 10, 30]


def test_without_segment_every_row_is_in_segment_all():
    table = arm_table(_fixed({("x", "none"): (1, 10), ("y", "none"): (2, 10), ("x", "sms"): (5, 10)}))
    assert table["segment"].tolist() == ["all", "all"]
    assert table.set_index("channel").loc["none", "n"] == 20


def test_rate_interval_columns_are_the_wilson_interval():
    table = arm_table(_fixed({("x", "none"): (3, 47), ("x", "sms"): (0, 10)}))
    sms = table.set_index("channel").loc["sms"]
    assert (sms["rate_low"], sms["rate_high"]) == pytest.approx(wilson_interval(0, 10))


def test_segment_without_holdout_gets_nan_lift_and_no_significance():
    table = arm_table(_fixed({("a", "none"): (1, 10), ("a", "sms"): (9, 10), ("b", "sms"): (9, 10)}),
                      segment="employment")
    b = table[table["segment"] == "b"].iloc[0]
    assert np.isnan(b["lift"]) and np.isnan(b["lift_low"])
    assert not b["significant"]


def test_arms_over_several_columns_keep_holdout_as_one_arm():
    logs = _logs({"none": 0.1, "sms": 0.2, "phone": 0.3}, n=300, seed=6)
    logs["offer"] = np.where(logs["channel"] == "none", "none", np.where(np.arange(len(logs)) % 2, "reminder",
                                                                          "instalment_plan"))
    table = arm_table(logs, arm=["channel", "offer"])
    assert list(zip(table["channel"], table["offer"], strict=True)) == [
        ("none", "none"), ("phone", "instalment_plan"), ("phone", "reminder"),
        ("sms", "instalment_plan"), ("sms", "reminder")]
    assert table["holdout"].tolist() == [True, False, False, False, False]


def test_weighting_by_propensity_removes_the_tilt_of_account_dependent_assignment():
    # two account types; type A (pays 10%) mostly gets sms, type B (pays 50%) mostly the hold-out; sms adds 0.10
    rng = np.random.default_rng(7)
    n = 40_000
    type_a = rng.random(n) < 0.5
    p_sms = np.where(type_a, 0.8, 0.2)
    sms = rng.random(n) < p_sms
    rate = np.where(type_a, 0.10, 0.50) + 0.10 * sms
    logs = pd.DataFrame({"channel": np.where(sms, "sms", "none"), "label": (rng.random(n) < rate).astype(int),
                         "propensity": np.where(sms, p_sms, 1 - p_sms)})
    plain = arm_table(logs).set_index("channel").loc["sms"]
    weighted = arm_table(logs, weighted=True).set_index("channel").loc["sms"]
    assert not plain["lift_low"] < 0.10 < plain["lift_high"]
    assert weighted["lift_low"] < 0.10 < weighted["lift_high"]
    assert weighted["n_eff"] < weighted["n"]


def test_lift_summary_returns_overall_and_per_segment_tables():
    logs = _logs({"none": 0.1, "sms": 0.2}, n=200, seed=8, segments=3)
    summary = lift_summary(logs, arms=["channel"], segments=["segment"], confidence=0.9)
    assert list(summary) == ["all", "segment"]
    assert summary["all"]["n"].tolist() == [600, 600]
    assert summary["segment"]["segment"].unique().tolist() == ["s000", "s001", "s002"]
    pd.testing.assert_frame_equal(summary["segment"], arm_table(logs, "channel", "segment", confidence=0.9))


def test_wider_confidence_gives_wider_intervals():
    logs = _logs({"none": 0.1, "sms": 0.2}, n=200, seed=9)
    narrow, wide = arm_table(logs, confidence=0.8), arm_table(logs, confidence=0.99)
    assert ((wide["rate_high"] - wide["rate_low"]) > (narrow["rate_high"] - narrow["rate_low"])).all()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.assign(label=[0, 1, 2, 0]), r"label must be 0 or 1; first bad rows \[2\]"),
    (lambda d: d.assign(label=[0, 1, None, 0]), r"label must be 0 or 1; first bad rows \[2\]"),
    (lambda d: d.drop(columns="label"), r"missing column\(s\) \['label'\]"),
    (lambda d: d.assign(channel=["none", None, "sms", "sms"]), r"channel has missing values; first bad rows \[1\]"),
    (lambda d: d.assign(propensity=[0.5, 0.0, 0.5, 1.5]), r"propensity must be in \(0, 1\]; first bad rows \[1, 3\]"),
])
def test_rejects_bad_logs_naming_column_and_rows(change, message):
    logs = pd.DataFrame({"channel": ["none", "none", "sms", "sms"], "label": [0, 1, 1, 0], "propensity": 0.5})
    with pytest.raises(ValueError, match=message):
        arm_table(change(logs), weighted=True)


def test_rejects_an_arm_that_mixes_holdout_and_contacted_rows():
    logs = pd.DataFrame({"channel": ["none", "sms"], "offer": ["reminder", "reminder"], "label": [0, 1]})
    with pytest.raises(ValueError, match="mixes hold-out and contacted"):
        arm_table(logs, arm=["offer"])


def test_rejects_confidence_outside_zero_one():
    with pytest.raises(ValueError, match="confidence"):
        arm_table(_logs({"none": 0.1}, n=10, seed=0), confidence=95)
