"""The model report: one self-contained HTML page per training run, readable without code.

`cureflow train` writes it beside the bundle (`outputs/train/report.html`) and logs it to the MLflow run
(artifact `report/report.html`). It holds the cure model's holdout metrics with what each one means,
calibration, gains and feature importance (the training plots, embedded), the response to each channel by
lifestyle segment on the held-out logged decisions (observed with 95% intervals, beside what the response
model predicts for the same decisions), and the policy's evaluation: off-policy estimates on the held-out
logs and, on simulated data, its true value against no contact, the best single action and the oracle.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.experiments import arm_table
from models.files import write_text_atomic
from pipelines.evaluate import off_policy, truth_values
from pipelines.feedback import NO_BLOCKS
from pipelines.quality_gate import quality_gate

METRIC_WORDS = {
    "roc_auc": ("ROC AUC", "chance that a customer who cured is ranked above one who did not (0.5 is a coin)"),
    "pr_auc": ("PR AUC", "average precision when working the list from the top"),
    "brier": ("Brier score", "mean squared gap between the predicted chance and what happened (lower is better)"),
    "ece": ("ECE", "mean gap between predicted and observed cure rates over ten groups (lower is better; on a few "
                   "hundred cases it reads high by chance alone)"),
    "rmsce_debiased": ("calibration error (debiased RMS)",
                       "root-mean-square gap between predicted and observed cure rates over the same ten groups, "
                       "less what chance alone adds; what the quality gate judges (lower is better)"),
    "ks": ("KS", "largest gap between the score distributions of cured and not cured customers"),
    "base_rate": ("cure rate", "share of holdout cases that cured within the horizon"),
    "n": ("holdout cases", "overdue accounts at the holdout's as-of dates"),
    "truth_n": ("accounts compared with the truth", "accounts overdue at the end of history (simulated data)"),
    "truth_mae": ("gap to the truth", "mean |predicted - true cure chance| at the end of history (simulated data)"),
}
TRUTH_WORDS = {
    "accounts": "overdue accounts at the end of history", "policy": "the policy, per account",
    "best_single_action": "the best single action for everyone, per account",
    "best_single_action_is": "that action", "oracle": "the oracle (each account's best allowed action), per account",
    "share_of_oracle": "share of the oracle's gain the policy captures",
    "times_best_single": "the policy's gain over the best single action's (times)",
    "policy_payment_uplift": "mean rise in the true chance of a payment within 7 days",
    "violations": "decisions a contact rule forbids", "audit_violations": "breaches found by the independent audit"}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2}.note{color:#555;font-size:.92em}
img{max-width:520px;border:1px solid #eee;margin:.3em 1em .3em 0}.pass{color:#176b2c}.fail{color:#a3141c}"""


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    """An HTML table of a frame (numbers rounded, text escaped)."""
    return frame.to_html(index=False, float_format=lambda v: f"{v:,.{digits}f}", na_rep="", border=0)


def _image(path: Path | None, alt: str) -> str:
    """An <img> with the PNG embedded, so the page stands alone; empty when the file is missing."""
    if path is None or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _number(value) -> str:
    """A figure as a person reads it: whole numbers without decimals, others to three."""
    if isinstance(value, bool | str) or value is None:
        return str(value)
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-size groups by predicted chance: cases, mean predicted and observed cure rate."""
    order = np.argsort(np.asarray(p, dtype=float), kind="stable")
    rows = [{"group": i + 1, "cases": len(idx), "mean predicted": float(np.mean(p[idx])),
             "observed": float(np.mean(y[idx]))} for i, idx in enumerate(np.array_split(order, bins)) if len(idx)]
    return pd.DataFrame(rows)


def importance_table(bundle, top: int = 12) -> pd.DataFrame:
    """The cure model's features by their share of the total gain."""
    gain = bundle.cure.booster_.feature_importance(importance_type="gain")
    share = gain / max(gain.sum(), 1e-12)
    order = np.argsort(share)[::-1][:top]
    return pd.DataFrame({"feature": [bundle.feature_names[i] for i in order], "share of gain": share[order]})


def response_by_segment(bundle, decisions: pd.DataFrame, arm: tuple[str, ...] = ("channel",),
                        segment: str = "segment") -> pd.DataFrame:
    """Per lifestyle segment and arm (channel by default), on logged decisions: the observed 7-day payment
    rate (weighted by 1/propensity, Wilson 95% interval), its lift over the segment's hold-out (Newcombe),
    and the response model's predicted rate for the same decisions (same weights)."""
    arm = list(arm)
    table = arm_table(decisions, arm, segment, weighted=True)
    X = decisions[bundle.feature_names].to_numpy(dtype=np.float64)
    q = bundle.response.predict_matrix(X)[np.arange(len(decisions)), decisions["action"].to_numpy()]
    w = 1.0 / decisions["propensity"].to_numpy(dtype=float)
    frame = pd.DataFrame({"segment": decisions[segment].to_numpy(), **{c: decisions[c].to_numpy() for c in arm},
                          "wq": w * q, "w": w})
    pred = frame.groupby(["segment", *arm])[["wq", "w"]].sum()
    keys = pd.MultiIndex.from_frame(table[["segment", *arm]])
    table["predicted"] = (pred["wq"] / pred["w"]).reindex(keys).to_numpy()
    return table[["segment", *arm, "n", "rate", "rate_low", "rate_high", "lift", "lift_low", "lift_high",
                  "predicted"]]


def policy_evaluation(result) -> tuple[pd.DataFrame, dict | None]:
    """Off-policy estimates on the held-out logs, and the truth comparison when the data is simulated."""
    bundle, portfolio = result.bundle, result.portfolio
    table, _ = off_policy(bundle, portfolio, result.history_end, logs=result.decisions_holdout,
                          blocked=NO_BLOCKS if result.blocked is None else result.blocked)
    truth_file = Path(result.data) / "truth" / "actions.parquet" if result.data else None
    truth = None
    if truth_file is not None and truth_file.exists():
        truth = truth_values(bundle, portfolio, pd.read_parquet(truth_file), result.history_end,
                             bundle.policy_config.explore)
    return table, truth


def _header(result, gate: tuple[bool, str]) -> str:
    meta = result.bundle.metadata
    passed, why = gate
    verdict = ('<b class="pass">passed</b>' if passed else f'<b class="fail">failed</b> ({html.escape(why)})')
    facts = pd.DataFrame([
        ("trained on data", f"{meta.get('data', '')} (fingerprint {meta.get('data_fingerprint', '')[:12]})"),
        ("history ends", meta.get("history_end", "")), ("cure holdout from", meta.get("cure_holdout_from", "")),
        ("response holdout from", meta.get("response_holdout_from", "")),
        ("policy version", result.bundle.params["policy"]["version"]),
        ("report written", datetime.now(UTC).isoformat(timespec="seconds"))], columns=["", "value"])
    return (f"<h1>Model report</h1><p>Cure model, response model and next-best-action policy, trained "
            f"together as one bundle. Quality gate: {verdict}.</p>{_table(facts)}")


def _cure_sections(result, files: dict[str, Path]) -> str:
    metrics = pd.DataFrame([(METRIC_WORDS[k][0], _number(result.metrics[k]), METRIC_WORDS[k][1])
                            for k in METRIC_WORDS if k in result.metrics], columns=["measure", "value", "meaning"])
    y, p = result.holdout["label"].to_numpy(), result.holdout["p"].to_numpy()
    return (
        "<h2>1. Cure model on the time holdout</h2><p class='note'>The chance that an overdue account pays all "
        "its arrears within the horizon if nothing is done, scored on the latest as-of dates, which the model "
        f"never saw.</p>{_table(metrics)}"
        "<h2>2. Calibration</h2><p class='note'>When the model says 30%, about 30% should cure: the points "
        "should sit on the diagonal.</p>" + _image(files.get("calibration"), "calibration")
        + _image(files.get("roc"), "ROC curve") + _table(calibration_table(y, p))
        + _band_section(result, files)
        + "<h2>3. Gains</h2><p class='note'>Holdout cases in ten groups from the highest predicted chance "
          "down: a good model separates the groups widely.</p>" + _image(files.get("gains_plot"), "gains")
        + _table(result.gains.drop(columns=["positives"], errors="ignore"))
        + "<h2>4. What drives the cure chance</h2><p class='note'>Share of the model's total gain by "
          "feature.</p>" + _image(files.get("importance"), "feature importance")
        + _table(importance_table(result.bundle)))


BAND_COLUMNS = {"band": "band", "n": "cases", "base_rate": "cure rate", "mean_p": "mean predicted",
                "roc_auc": "ROC AUC", "baseline_roc_auc": "baseline ROC AUC", "auc_lift": "lift over baseline",
                "ece": "ECE", "baseline_ece": "baseline ECE", "rmsce_debiased": "calibration error (debiased RMS)"}


def band_table(rows: list[dict]) -> pd.DataFrame:
    """One band per row with the model's and the baseline's figures (blank where a band has one class)."""
    frame = pd.DataFrame(rows)[list(BAND_COLUMNS)].rename(columns=BAND_COLUMNS)
    return frame.astype({c: float for c in frame.columns[2:]})


def _band_section(result, files: dict[str, Path]) -> str:
    """Metrics and calibration by days-past-due band and by arrears size, beside the baseline."""
    if not result.bands:
        return ""
    stale = result.metrics.get("stale_n", 0)
    return ("<h3>By days past due and by arrears, beside the baseline</h3><p class='note'>The quality gate "
            "judges fresh arrears (1-90 days past due), the accounts a collector can still cure: telling them "
            "from old debt is easy and would flatter a pooled figure. Its calibration check reads the debiased RMS "
            "calibration error (ECE over ten groups reads high on a few hundred cases by chance alone: it is "
            "shown beside it). The baseline is a logistic regression on "
            "days past due, arrears and days since the last payment, trained on the same rows. Stale debt "
            f"(past the days-past-due limit; {stale:,.0f} holdout cases) is its own track and not scored here."
            "</p>" + _table(band_table([result.bands["fresh"]]))
            + _table(band_table(result.bands["days_past_due"])) + _table(band_table(result.bands["arrears"]))
            + _image(files.get("band_calibration"), "calibration by days-past-due band"))


def response_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """One row per segment, one column per channel: observed rate [95% interval], the model's rate, n."""
    cell = [f"{r.rate:.2f} [{r.rate_low:.2f}, {r.rate_high:.2f}] model {r.predicted:.2f} (n={r.n})"
            for r in table.itertuples()]
    wide = table.assign(cell=cell).pivot(index="segment", columns="channel", values="cell")
    return wide.rename_axis(columns=None).reset_index()


def response_plot(table: pd.DataFrame) -> str:
    """Observed against predicted rate per segment and channel, with the observed 95% interval, as an
    embedded PNG: points on the diagonal are segments the response model judges right."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for channel, part in table.groupby("channel"):
        below = np.clip(part["rate"] - part["rate_low"], 0, None)   # Wilson bounds can sit a hair off a 0 rate
        above = np.clip(part["rate_high"] - part["rate"], 0, None)
        ax.errorbar(part["predicted"], part["rate"], yerr=[below, above], fmt="o", capsize=2, alpha=0.8,
                    label=channel)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    top = float(np.nanmax([table["rate_high"].max(), table["predicted"].max()])) + 0.05
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="predicted by the response model", ylabel="observed (95% interval)",
           title="Paid within 7 days, by segment and channel")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="response by segment" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _response_section(result) -> str:
    title = "<h2>5. Response by lifestyle segment</h2>"
    decisions = result.decisions_holdout
    if result.bundle.response is None or decisions is None or decisions.empty:
        return title + "<p>No response model: the logs hold no randomised decisions to learn from or check.</p>"
    table = response_by_segment(result.bundle, decisions)
    return (title + f"<p class='note'>The {len(decisions):,} logged experiment decisions after the response "
            "model's training cut-off: the share that paid within 7 days per channel (<i>none</i> is the "
            "experiments' hold-out: no contact), weighted by the inverse of the chance the experiment chose it, "
            "with its 95% interval, beside what the response model predicts for the same decisions. A "
            "prediction far outside the interval means the model misjudges that segment.</p>"
            + response_plot(table) + _table(response_pivot(table)))


def _readable_estimates(table: pd.DataFrame) -> pd.DataFrame:
    """The off-policy table with rates to three decimals and money to whole units."""
    out = table.copy()
    for col in ("value", "low", "high"):
        out[col] = [f"{v:,.0f}" if unit.startswith("JPY") else f"{v:.3f}" for v, unit in zip(out[col], out["unit"],
                                                                                           strict=True)]
    out["ess"] = out["ess"].map(lambda v: f"{v:,.0f}")
    return out


def _policy_section(result) -> str:
    title = "<h2>6. The policy's evaluation</h2>"
    if result.bundle.response is None or result.decisions_holdout is None or result.portfolio is None:
        return title + "<p>No response model, so the policy is no contact for everyone; nothing to evaluate.</p>"
    table, truth = policy_evaluation(result)
    out = (title + "<p class='note'>Off-policy estimates on the held-out logged decisions: what the policy "
           "would have earned had it chosen those actions, from the decisions where it agrees with the "
           "experiment (IPS, SNIPS) and corrected by the response model (DR), beside the logging policy's own "
           "value; 95% intervals, <i>ess</i> the effective number of decisions behind the estimate.</p>"
           + _table(_readable_estimates(table)))
    if truth:
        shown = {**truth, "audit_violations": len(truth["audit_violations"])}
        frame = pd.DataFrame([(TRUTH_WORDS[k], _number(shown[k])) for k in TRUTH_WORDS if k in shown],
                             columns=["measure", "value"])
        currency = html.escape(str(result.bundle.params["policy"].get("currency", "")))
        out += ("<p class='note'>Simulated data: the true value per overdue account at the end of history "
                f"({currency}, chance of payment with the action minus "
                "without, times arrears, less the action's cost), beside no contact (0), the best single action "
                "for everyone and the oracle that knows each account's best action.</p>" + _table(frame))
    return out


def build_report(result, files: dict[str, Path]) -> str:
    """The whole page as a string."""
    gate = quality_gate(result.metrics, result.bundle.params["train"]["quality_gate"])
    body = _header(result, gate) + _cure_sections(result, files) + _response_section(result)
    body += _policy_section(result)
    params = html.escape(json.dumps({k: result.bundle.params[k] for k in ("cure", "response", "policy")}, indent=1))
    body += f"<h2>7. Parameters</h2><details><summary>cure, response and policy</summary><pre>{params}</pre></details>"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Model report</title><style>{STYLE}</style>" \
           f"</head><body>{body}</body></html>"


def write_report(result, files: dict[str, Path], path: Path) -> Path:
    """Write the report to `path` and return it."""
    return write_text_atomic(build_report(result, files), path)
