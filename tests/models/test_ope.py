"""Off-policy estimators on a synthetic bandit whose true policy values are known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.ope import Estimate, bootstrap, compare, direct, doubly_robust, ips, logging_value, snips

# true chance of payment within 7 days, 3 contexts x 4 actions; logging is uniform (propensity 0.25)
MEAN = np.array([[0.2, 0.9, 0.3, 0.1],
                 [0.8, 0.2, 0.4, 0.3],
                 [0.3, 0.1, 0.7, 0.5]])
GREEDY = MEAN.argmax(axis=1)                       # actions 1, 0, 2
TRUE_GREEDY_VALUE = MEAN[np.arange(3), GREEDY].mean()   # 0.8; the logging policy's is 0.4


def _policy(eps: float) -> np.ndarray:
    """(contexts, actions) probabilities of the epsilon-greedy target (eps = 0: deterministic)."""
    pi = np.full(MEAN.shape, eps / MEAN.shape[1])
    pi[np.arange(3), GREEDY] += 1.0 - eps
    return pi


def _bandit(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly logged decisions: context, action, Bernoulli reward."""
    rng = np.random.default_rng(seed)
    x, a = rng.integers(0, 3, n), rng.integers(0, 4, n)
    return x, a, (rng.random(n) < MEAN[x, a]).astype(float)


def _inputs(x, a, r, pi: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """The estimators' arguments for target `pi` and reward model `q` (both contexts x actions)."""
    return {"reward": r, "logged_propensity": np.full(len(r), 0.25), "target_prob": pi[x, a],
            "q_logged": q[x, a], "q_target": (pi * q).sum(axis=1)[x]}


def _ipw(inputs: dict) -> dict:
    return {k: inputs[k] for k in ("reward", "logged_propensity", "target_prob")}


def _covers(est: Estimate, truth: float) -> bool:
    return est.low <= truth <= est.high


def _population() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """120 rows whose empirical distribution is the bandit's exactly: 10 per (context, action), 10 x mean ones."""
    x, a = np.repeat(np.arange(3), 40), np.tile(np.repeat(np.arange(4), 10), 3)
    r = (np.tile(np.arange(10), 12) < np.round(10 * MEAN[x, a])).astype(float)
    return x, a, r


@pytest.fixture(scope="module")
def logged():
    return _bandit(20_000, seed=0)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_ips_snips_and_dr_intervals_cover_the_true_value_of_the_target_policy(logged, eps):
    inputs = _inputs(*logged, _policy(eps), MEAN + 0.1)
    truth = (_policy(eps) * MEAN).sum(axis=1).mean()
    for est in (ips(**_ipw(inputs)), snips(**_ipw(inputs)), doubly_robust(**inputs)):
        assert _covers(est, truth), est
        assert abs(est.value - truth) < 0.03


def test_ips_snips_and_dr_intervals_cover_the_truth_about_95_percent_of_the_time():
    hits = []
    for seed in range(300):
        inputs = _inputs(*_bandit(2000, seed), _policy(0.0), MEAN + 0.1)
        hits.append([_covers(est, TRUE_GREEDY_VALUE)
                     for est in (ips(**_ipw(inputs)), snips(**_ipw(inputs)), doubly_robust(**inputs))])
    coverage = np.mean(hits, axis=0)
    assert ((coverage >= 0.92) & (coverage <= 0.98)).all(), coverage


def test_dr_with_a_perfect_reward_model_is_much_narrower_than_ips(logged):
    inputs = _inputs(*logged, _policy(0.0), MEAN)
    est_ips, est_dr = ips(**_ipw(inputs)), doubly_robust(**inputs)
    assert (est_dr.high - est_dr.low) < 0.6 * (est_ips.high - est_ips.low)
    assert _covers(est_dr, TRUE_GREEDY_VALUE)


def test_dr_with_a_biased_reward_model_stays_unbiased_while_the_direct_method_misses(logged):
    inputs = _inputs(*logged, _policy(0.0), MEAN + 0.15)
    est_dr, est_dm = doubly_robust(**inputs), direct(inputs["q_target"])
    assert _covers(est_dr, TRUE_GREEDY_VALUE)
    assert abs(est_dr.value - TRUE_GREEDY_VALUE) < 0.02
    assert not _covers(est_dm, TRUE_GREEDY_VALUE)
    assert est_dm.value == pytest.approx(TRUE_GREEDY_VALUE + 0.15, abs=0.01)


@pytest.mark.parametrize("bias", [0.0, 0.15, -0.3])
def test_ips_snips_and_dr_are_exactly_unbiased_on_the_population_and_dm_is_off_by_the_model_bias(bias):
    x, a, r = _population()
    inputs = _inputs(x, a, r, _policy(0.0), MEAN + bias)
    assert ips(**_ipw(inputs)).value == pytest.approx(TRUE_GREEDY_VALUE, abs=1e-12)
    assert snips(**_ipw(inputs)).value == pytest.approx(TRUE_GREEDY_VALUE, abs=1e-12)
    assert doubly_robust(**inputs).value == pytest.approx(TRUE_GREEDY_VALUE, abs=1e-12)
    assert direct(inputs["q_target"]).value == pytest.approx(TRUE_GREEDY_VALUE + bias, abs=1e-12)


def test_estimators_match_hand_computed_values_on_two_decisions():
    # row 0: weight 0.5/0.5 = 1, row 1: weight 1/0.25 = 4
    reward, mu, pi, q_logged, q_target = [1.0, 0.0], [0.5, 0.25], [0.5, 1.0], [0.2, 0.6], [0.4, 0.6]
    est = ips(reward, mu, pi)
    assert est.value == pytest.approx(0.5)                                  # (1 * 1 + 4 * 0) / 2
    assert (est.low, est.high) == pytest.approx((0.5 - 1.959964 * 0.5, 0.5 + 1.959964 * 0.5))  # sd 0.707 / sqrt 2
    assert est.ess == pytest.approx(25 / 17)                                # (1 + 4)^2 / (1 + 16)
    assert snips(reward, mu, pi).value == pytest.approx(0.2)                # 1 / (1 + 4)
    assert doubly_robust(reward, mu, pi, q_logged, q_target).value == pytest.approx(-0.3)  # (1.2 + -1.8) / 2


def test_logging_value_is_the_mean_reward_and_covers_the_logging_policys_value(logged):
    est = logging_value(logged[2])
    assert est.value == logged[2].mean()
    assert _covers(est, MEAN.mean())
    assert (est.n, est.ess) == (20_000, 20_000.0)


def test_ess_counts_the_decisions_a_deterministic_target_agrees_with():
    x, a, r = _population()
    inputs = _inputs(x, a, r, _policy(0.0), MEAN)
    assert ips(**_ipw(inputs)).ess == pytest.approx(30.0)     # 3 contexts x 10 rows take the target's action
    assert ips(r, np.full(120, 0.25), np.full(120, 0.25)).ess == pytest.approx(120.0)


_rows = st.lists(st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.floats(1e-6, 1.0)), min_size=1, max_size=60)


@given(_rows)
def test_ips_equals_the_mean_reward_exactly_when_the_target_is_the_logging_policy(rows):
    reward, propensity = (np.array(c) for c in zip(*rows, strict=True))
    est = ips(reward, propensity, propensity)
    assert est.value == np.mean(reward) == logging_value(reward).value
    assert est.ess == pytest.approx(len(rows))


@given(_rows)
def test_dr_with_a_zero_reward_model_is_ips(rows):
    reward, propensity = (np.array(c) for c in zip(*rows, strict=True))
    target = np.clip(propensity * 1.5, 0, 1)
    zero = np.zeros(len(rows))
    assert doubly_robust(reward, propensity, target, zero, zero).value == ips(reward, propensity, target).value


@given(_rows, st.floats(-1e3, 1e3))
def test_snips_moves_with_a_shift_of_every_reward(rows, shift):
    reward, propensity = (np.array(c) for c in zip(*rows, strict=True))
    target = np.where(np.arange(len(rows)) % 2 == 0, 1.0, 0.3)
    moved = snips(reward + shift, propensity, target).value
    assert moved == pytest.approx(snips(reward, propensity, target).value + shift, rel=1e-9, abs=1e-6)


def test_snips_is_nan_when_the_target_never_takes_a_logged_action():
    est = snips(np.ones(5), np.full(5, 0.5), np.zeros(5))
    assert np.isnan(est.value) and est.ess == 0.0
    assert ips(np.ones(5), np.full(5, 0.5), np.zeros(5)).value == 0.0


def test_wider_confidence_gives_a_wider_interval(logged):
    inputs = _ipw(_inputs(*logged, _policy(0.0), MEAN))
    narrow, wide = ips(**inputs, confidence=0.8), ips(**inputs, confidence=0.99)
    assert wide.high - wide.low > narrow.high - narrow.low
    assert wide.value == narrow.value


def test_bootstrap_is_reproducible_with_a_seed_and_agrees_with_the_normal_interval():
    inputs = _ipw(_inputs(*_bandit(5000, seed=3), _policy(0.0), MEAN))
    args = (inputs["reward"], inputs["logged_propensity"], inputs["target_prob"])
    first, again = bootstrap(ips, *args, seed=7, n_boot=300), bootstrap(ips, *args, seed=7, n_boot=300)
    other = bootstrap(ips, *args, seed=8, n_boot=300)
    normal = ips(*args)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.value == normal.value and first.name == "IPS (bootstrap)"
    assert (first.high - first.low) == pytest.approx(normal.high - normal.low, rel=0.15)


def test_compare_lists_estimates_in_order_with_interval_widths(logged):
    inputs = _inputs(*logged, _policy(0.0), MEAN)
    table = compare([logging_value(inputs["reward"]), ips(**_ipw(inputs)), doubly_robust(**inputs)])
    assert table["name"].tolist() == ["logging policy", "IPS", "DR"]
    assert list(table.columns) == ["name", "value", "low", "high", "n", "ess", "width"]
    pd.testing.assert_series_equal(table["width"], table["high"] - table["low"], check_names=False)


@pytest.mark.parametrize(("args", "message"), [
    (([1, 0, 1], [0.5, 0.0, 0.5], [1, 1, 1]), r"logged_propensity must be in \(0, 1\]; first bad rows \[1\]"),
    (([1, 0, 1], [0.5, 1.2, np.nan], [1, 1, 1]), r"logged_propensity must be finite; first bad rows \[2\]"),
    (([1, 0, 1], [0.5, 1.2, 0.5], [1, 1, 1]), r"logged_propensity must be in \(0, 1\]; first bad rows \[1\]"),
    (([1, 0, 1], [0.5, 0.5, 0.5], [1, -0.1, 2]), r"target_prob must be in \[0, 1\]; first bad rows \[1, 2\]"),
    (([1, 0], [0.5, 0.5, 0.5], [1, 1, 1]), r"same length.*'reward': 2, 'logged_propensity': 3"),
    (([np.inf, 0, 1], [0.5, 0.5, 0.5], [1, 1, 1]), r"reward must be finite; first bad rows \[0\]"),
    (([], [], []), "empty"),
])
def test_rejects_bad_inputs_naming_the_argument_and_rows(args, message):
    with pytest.raises(ValueError, match=message):
        ips(*args)


def test_doubly_robust_rejects_reward_model_of_the_wrong_length():
    with pytest.raises(ValueError, match="'q_target': 2"):
        doubly_robust([1, 0, 1], [0.5] * 3, [1, 1, 1], [0.2] * 3, [0.2] * 2)
