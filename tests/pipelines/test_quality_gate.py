"""The quality gate judges the debiased RMS calibration error, not the plug-in ECE (pipelines/quality_gate.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.config import load_params
from models.metrics import band_metrics, band_report
from pipelines.quality_gate import quality_gate

GATE = {"min_roc_auc": 0.7, "max_ece": 0.05, "min_band_examples": 200, "min_baseline_lift": 0.0}
GOOD = {"fresh_roc_auc": 0.8, "fresh_auc_lift": 0.05, "fresh_n": 900, "fresh_ece": 0.07,
        "fresh_rmsce_debiased": 0.02, "dpd_1-30_n": 600, "dpd_1-30_ece": 0.08, "dpd_1-30_rmsce_debiased": 0.03,
        "dpd_31-90_n": 300, "dpd_31-90_ece": 0.09, "dpd_31-90_rmsce_debiased": 0.04}


def _holdout_metrics(gap: float, n: int = 250, seed: int = 0) -> dict[str, float]:
    """The flat band metrics training logs, for n holdout cases 31-90 days past due whose outcomes are drawn
    from the prediction plus `gap`, beside a near-constant baseline."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.88, n)
    y = (rng.random(n) < p + gap).astype(int)
    frame = pd.DataFrame({"label": y, "p": p, "p_baseline": 0.5 + rng.random(n) * 1e-3,
                          "days_past_due": rng.integers(31, 91, n).astype(float),
                          "arrears_instalments": rng.random(n) * 3})
    return band_metrics(band_report(frame))


def test_gate_judges_the_debiased_error_and_names_it():
    assert quality_gate(GOOD, GATE) == (True, "")   # plug-in ECE 0.07-0.09 is sampling noise here
    ok, why = quality_gate({**GOOD, "dpd_31-90_rmsce_debiased": 0.06}, GATE)
    assert not ok and "dpd_31-90 calibration error (debiased RMS) 0.0600 > 0.05" in why and "plug-in ECE 0.090" in why
    assert not quality_gate({**GOOD, "fresh_rmsce_debiased": 0.051}, GATE)[0]
    assert not quality_gate({**GOOD, "dpd_1-30_rmsce_debiased": 0.3}, GATE)[0]
    assert quality_gate({**GOOD, "dpd_31-90_rmsce_debiased": 0.3, "dpd_31-90_n": 199}, GATE) == (True, "")
    assert not quality_gate({**GOOD, "dpd_31-90_rmsce_debiased": 0.3, "dpd_31-90_n": 200}, GATE)[0]


def test_gate_fails_a_model_miscalibrated_by_ten_points_on_250_cases():
    # one draw of 250 cases is noisy: seed 0's outcomes sit only 0.05 above the predictions and the gate passes
    # it (the measure reads 0.026); about 15% of draws do, which the test over draws below bounds. Seed 1:
    m = _holdout_metrics(0.10, seed=1)
    assert m["fresh_n"] == m["dpd_31-90_n"] == 250 and m["fresh_roc_auc"] > 0.7   # only calibration is wrong
    ok, why = quality_gate(m, GATE)
    assert not ok and "dpd_31-90 calibration error (debiased RMS)" in why, (m["dpd_31-90_rmsce_debiased"], why)


def test_gate_passes_a_calibrated_model_on_250_cases_that_the_plug_in_ece_failed():
    m = _holdout_metrics(0.0)
    assert m["dpd_31-90_ece"] > 0.05   # the old gate: failed for sample size alone
    assert quality_gate(m, GATE) == (True, ""), m["dpd_31-90_rmsce_debiased"]


def test_gate_verdicts_over_draws_separate_calibrated_from_ten_points_off():
    # the same 250-case set-up over 100 draws each (fixed seeds): a calibrated model passes far more often
    # than one 0.10 off (simulation: about 80% against 12%; benchmarks/calibration_gate.py)
    passed = {gap: np.mean([quality_gate(_holdout_metrics(gap, seed=s), GATE)[0] for s in range(100, 200)])
              for gap in (0.0, 0.10)}
    assert passed[0.0] >= 0.65 and passed[0.10] <= 0.25, passed


def test_params_keep_the_threshold_and_the_band_size():
    gate = load_params()["train"]["quality_gate"]
    assert gate["max_ece"] == 0.05 and gate["min_band_examples"] == 200


def test_a_policy_update_keeps_the_champions_cure_model_and_brings_the_retrains_policy(trained):
    """When only the retrained cure model fails the gate, what ships is the retrain's policy on the champion's
    cure model, with the cure model's own metadata; nothing ships without a champion or a response model, or
    when the two compute different features."""
    import copy

    import joblib

    from pipelines.quality_gate import policy_update

    retrain = joblib.load(trained["bundle_path"])
    assert retrain.response is not None
    champion = copy.deepcopy(retrain)
    champion.model_version, champion.metadata["stale_cure_rate"] = "cureflow/1", 0.123
    champion.metadata["reference"] = {**champion.metadata["reference"], "actions": {"marker": "champion"}}
    update = policy_update(retrain, champion)
    assert update.cure is champion.cure and update.baseline is champion.baseline
    assert update.response is retrain.response and update.safe is retrain.safe and update.params is retrain.params
    assert update.metadata["stale_cure_rate"] == 0.123
    assert update.metadata["cure_model_from"]["model_version"] == "cureflow/1"
    assert update.metadata["reference"]["score"] == champion.metadata["reference"]["score"]
    actions = update.metadata["reference"]["actions"]
    assert actions == retrain.metadata["reference"]["actions"] != {"marker": "champion"}
    assert retrain.cure is not champion.cure and "cure_model_from" not in retrain.metadata  # the retrain unchanged
    assert policy_update(retrain, None) is None
    playbook_only = copy.copy(retrain)
    playbook_only.response = None
    assert policy_update(playbook_only, champion) is None
    other = copy.deepcopy(champion)
    other.params["features"]["contact_lookback_days"] += 1
    assert policy_update(retrain, other) is None
