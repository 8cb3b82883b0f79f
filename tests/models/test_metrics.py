"""The debiased calibration error the quality gate judges (models.metrics.debiased_calibration_error)."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    debiased_calibration_error,
    debiased_squared_calibration_error,
    expected_calibration_error,
)


def _draws(n: int, gap: float, draws: int, seed: int, measure) -> np.ndarray:
    """`measure` on `draws` samples of n cases: predictions uniform on [0.05, 0.85], outcomes drawn from the
    prediction plus `gap` (0: a perfectly calibrated model)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        p = rng.uniform(0.05, 0.85, n)
        out.append(measure((rng.random(n) < p + gap).astype(float), p))
    return np.array(out)


def test_debiased_squared_error_is_zero_on_average_for_a_calibrated_model():
    sq = _draws(200, 0.0, 2000, 11, debiased_squared_calibration_error)
    se = sq.std(ddof=1) / np.sqrt(len(sq))        # the tolerance comes from the draws themselves
    assert abs(sq.mean()) < 4 * se, (sq.mean(), se)
    # the plug-in ECE on the same kind of draws is far from 0: what the gate used to judge
    ece = _draws(200, 0.0, 300, 11, expected_calibration_error)
    assert ece.mean() > 0.06
    rms = _draws(200, 0.0, 300, 11, debiased_calibration_error)
    assert rms.mean() < 0.5 * ece.mean() and (rms <= 0.05).mean() > 0.6 > (ece <= 0.05).mean()


def test_debiased_error_recovers_a_known_uniform_gap():
    # 5,000 cases, outcomes 0.08 above every prediction: the true ECE and RMS error are both 0.08. The
    # estimate's standard deviation is about 0.0065 here (see the draws below), so 0.02 is three of them.
    one = _draws(5000, 0.08, 1, 12, debiased_calibration_error)[0]
    assert abs(one - 0.08) < 0.02, one
    many = _draws(5000, 0.08, 100, 13, debiased_calibration_error)
    assert abs(many.mean() - 0.08) < 4 * many.std(ddof=1) / np.sqrt(len(many)) + 0.002, many.mean()
    assert 0.003 < many.std(ddof=1) < 0.012


def test_debiased_error_is_not_softer_than_the_true_ece_on_a_local_gap():
    # the gap sits in the top 30% of predictions only (0.17 there, true ECE 0.05, true RMS error 0.09):
    # the RMS error weighs it more than the ECE does, so the gate at 0.05 catches it
    rng = np.random.default_rng(14)
    p = rng.uniform(0.05, 0.75, 5000)
    top = p >= np.quantile(p, 0.7)
    y = (rng.random(5000) < p + np.where(top, 0.05 / 0.3, 0.0)).astype(float)
    assert debiased_calibration_error(y, p) > 0.07 > expected_calibration_error(y, p) > 0.03


def test_debiased_error_handles_tiny_and_empty_inputs():
    assert np.isnan(debiased_calibration_error(np.array([]), np.array([])))
    assert debiased_calibration_error(np.array([1.0]), np.array([0.4])) == pytest.approx(0.6)  # one case: as is
    assert debiased_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.5), bins=1) == 0.0
