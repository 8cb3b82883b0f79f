"""The team's rule, estimated: recovers a known stochastic rule, finds no overlap in a deterministic one,
refuses to be trusted when uncalibrated, and gives the same answer for the same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import logging_policy as lp

LGBM = {"learning_rate": 0.1, "n_estimators": 150, "num_leaves": 7, "min_child_samples": 40}


def _rule(n: int = 6000, seed: int = 0, deviate: float = 0.3):
    """A staged rule: an SMS in the evening before day 10, a call in the morning from day 10 (a letter where
    there is no phone consent); with probability `deviate` a random channel of the three and a random window
    of two. The offer is a plan for the vulnerable, else a reminder. Returns X, actions, accounts, the true
    propensity of the logged action."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 40, n).astype(float)
    consent = rng.random(n) < 0.7
    vulnerable = rng.random(n) < 0.1
    ruled_channel = np.where(days < 10, "sms", np.where(consent, "phone", "letter"))
    ruled_window = np.where(days < 10, "weekday_evening", "weekday_morning")
    dev = rng.random(n) < deviate
    channels, windows = np.array(["sms", "phone", "letter"]), np.array(["weekday_evening", "weekday_morning"])
    channel = np.where(dev, channels[rng.integers(0, 3, n)], ruled_channel)
    window = np.where(dev, windows[rng.integers(0, 2, n)], ruled_window)
    offer = np.where(vulnerable, "instalment_plan", "reminder")
    p = (1 - deviate) * ((channel == ruled_channel) & (window == ruled_window)) + deviate / 6
    X = pd.DataFrame({"days_past_due": days, "rule_consent_phone": consent.astype(float),
                      "rule_vulnerable": vulnerable.astype(float), "noise": rng.normal(size=n)})
    actions = pd.DataFrame({"channel": channel, "window": window, "offer": offer})
    accounts = np.array([f"A{i % (n // 3)}" for i in range(n)])
    return X, actions, accounts, p


def _conf(**kw) -> lp.BAUConfig:
    kw.setdefault("max_calibration_error", 0.05)  # 6,000 decisions: the ECE's own noise is about 0.02
    return lp.BAUConfig(use=True, lgbm=LGBM, **kw)


def test_recovers_a_known_stochastic_rule_out_of_fold():
    X, actions, accounts, p_true = _rule()
    est, summary = lp.estimate(X, actions, accounts, _conf(min_propensity=0.02), seed=5)
    p = est["propensity"].to_numpy()
    assert np.isfinite(p).all()
    assert np.mean(np.abs(p - p_true)) < 0.03
    ruled, deviated = p_true > 0.5, p_true < 0.1
    assert p[ruled].mean() == pytest.approx(0.75, abs=0.03)
    assert p[deviated].mean() == pytest.approx(0.05, abs=0.015)
    assert max(summary["calibration_error"].values()) <= 0.05
    assert summary["used"] == len(X)  # every decision of a rule this random has overlap


def test_deterministic_rule_yields_no_business_as_usual_decision():
    X, actions, accounts, _ = _rule(deviate=0.0)
    est, summary = lp.estimate(X, actions, accounts, _conf(), seed=5)
    assert not est["used"].any() and summary["used"] == 0
    assert summary["dropped"] == {lp.RULE_DECIDED: len(X)}


def test_overlap_floor_drops_the_rare_deviations():
    X, actions, accounts, p_true = _rule()
    est, _ = lp.estimate(X, actions, accounts, _conf(min_propensity=0.1), seed=5)
    assert (est.loc[p_true < 0.1, "why"] == lp.BELOW_FLOOR).mean() > 0.95
    assert est.loc[p_true > 0.5, "used"].mean() > 0.95


def test_an_uncalibrated_estimate_is_not_used():
    X, actions, accounts, _ = _rule()
    est, summary = lp.estimate(X, actions, accounts, _conf(max_calibration_error=1e-6), seed=5)
    assert not est["used"].any()
    assert summary["dropped"] == {lp.UNTRUSTED: len(X)}


def test_too_few_decisions_are_not_estimated():
    X, actions, accounts, _ = _rule(n=150)
    est, summary = lp.estimate(X, actions, accounts, _conf(), seed=5)
    assert summary["used"] == 0 and est["propensity"].isna().all()


def test_folds_keep_each_account_on_one_side():
    accounts = np.array(["a", "b", "a", "c", "b", "d"] * 5)
    folds = lp.folds_by_account(accounts, 3, seed=1)
    for a in np.unique(accounts):
        assert len(np.unique(folds[accounts == a])) == 1
    assert set(folds) <= {0, 1, 2}


def test_same_seed_same_estimate():
    X, actions, accounts, _ = _rule(n=2000)
    a, _ = lp.estimate(X, actions, accounts, _conf(), seed=20261123)
    b, _ = lp.estimate(X, actions, accounts, _conf(), seed=20261123)
    pd.testing.assert_frame_equal(a, b)


def test_config_refuses_bounds_that_are_not_ordered():
    with pytest.raises(ValueError, match="min_propensity < max_propensity"):
        lp.BAUConfig.from_params({"response": {"business_as_usual": {"min_propensity": 0.5, "max_propensity": 0.4}}})
