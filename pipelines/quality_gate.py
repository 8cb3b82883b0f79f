"""The quality gate a trained cure model must pass before its version can become `@challenger`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.metrics import (
    DPD_BANDS,
    FRESH_DAYS_PAST_DUE,
    band_key,
)

if TYPE_CHECKING:
    from models.bundle import ScoringBundle

CALIBRATION = "rmsce_debiased"  # the figure the gate judges against max_ece (models.metrics.debiased_calibration_error)


def quality_gate(metrics: dict[str, float], gate: dict) -> tuple[bool, str]:
    """Judge the arrears a collector works, not the pooled holdout (telling fresh arrears from old ones is
    easy): on fresh arrears (1-90 days past due) ROC AUC >= min_roc_auc and a lift over the three-feature
    baseline above min_baseline_lift; the debiased RMS calibration error (`*_rmsce_debiased`) <= max_ece on
    fresh arrears and in each of its bands (1-30, 31-90) holding at least min_band_examples cases. Later
    bands are reported, not judged.

    The plug-in ECE (`*_ece`, still reported) is biased upwards on a few hundred cases: a calibrated model
    reads above 0.05 on most draws of 200-360 cases. The debiased RMS error's square is unbiased, and the true
    ECE is at most the true RMS error, so the same threshold is no softer on a miscalibrated model. Metrics
    from before the debiased figure existed (no `*_rmsce_debiased` key) are judged on their ECE, as then."""
    problems = []
    auc, lift = metrics.get("fresh_roc_auc"), metrics.get("fresh_auc_lift")
    if auc is None or lift is None:
        problems.append("no fresh arrears (1-90 days past due) with both outcomes in the holdout")
    else:
        if auc < float(gate["min_roc_auc"]):
            problems.append(f"fresh-arrears roc_auc {auc:.3f} < {gate['min_roc_auc']}")
        if lift <= float(gate.get("min_baseline_lift", 0.0)):
            problems.append(f"fresh-arrears lift over the baseline {lift:+.3f} <= {gate.get('min_baseline_lift', 0.0)}")
    min_n = float(gate.get("min_band_examples", 200))
    fresh_bands = [label for label, _, high in DPD_BANDS if high <= FRESH_DAYS_PAST_DUE]
    for name in ["fresh", *(f"dpd_{band_key(label)}" for label in fresh_bands)]:
        if metrics.get(f"{name}_n", 0) < min_n:
            continue
        n = metrics[f"{name}_n"]
        error, ece = metrics.get(f"{name}_{CALIBRATION}"), metrics.get(f"{name}_ece")
        if error is not None and error > float(gate["max_ece"]):
            problems.append(f"{name} calibration error (debiased RMS) {error:.4f} > {gate['max_ece']} "
                            f"({n:,.0f} cases; plug-in ECE {_fmt(ece)})")
        elif error is None and ece is not None and ece > float(gate["max_ece"]):
            problems.append(f"{name} ece {ece:.3f} > {gate['max_ece']} ({n:,.0f} cases)")
    return (not problems, "; ".join(problems))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def policy_update(bundle: ScoringBundle, champion: ScoringBundle | None) -> ScoringBundle | None:
    """What a retrain whose cure model failed the gate still ships: its policy (response model and safe
    policy, each validated on its own held-out decisions when it was fitted) on the champion's cure model,
    which passed the gate. None when there is nothing to ship that way: no champion, no response model in the
    retrain (its policy is the playbook), or features the champion's cure model does not read."""
    if champion is None or bundle.response is None:
        return None
    try:
        return bundle.with_cure_model_of(champion)
    except ValueError:
        return None
