"""The README's demo figures, from what `make demo` wrote, so they cannot drift.

    python scripts/readme_figures.py             # after `make demo`: record the figures and rewrite the README block
    python scripts/readme_figures.py --check     # compare a demo's outputs with the recorded figures (tolerances)

The figures go to `docs/demo_figures.json`; the README's "Demo figures" block (between the two
`demo-figures` markers) is rendered from that file alone, and `tests/test_readme_figures.py` checks both
that the README is the rendering of the recorded figures and that a fresh `make demo` reproduces them
within `TOLERANCES`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "demo_figures.json"
README = ROOT / "README.md"
START, END = "<!-- demo-figures:start (scripts/readme_figures.py writes this block) -->", "<!-- demo-figures:end -->"
MIN_BAND = 200  # the quality gate judges a band's calibration from this many holdout cases
GATED_BANDS = ("1-30", "31-90")  # the fresh arrears a collector works: the bands the gate judges

# How far a fresh demo may be from the recorded figures: counts of rows exactly, model figures by an absolute
# amount, money by a share. The same data, model and as-of give the same answer; the margins cover a library's
# thread scheduling, never a change of behaviour.
TOLERANCES = {
    "exact": ("accounts", "months", "seed", "overdue", "as_of", "queue_rows", "calls_kept", "violations",
              "baseline_is"),
    "absolute": {"roc_auc": 0.01, "pr_auc": 0.01, "brier": 0.005, "ece": 0.01, "ks": 0.02, "base_rate": 0.005,
                 "fresh_roc_auc": 0.01, "fresh_baseline_roc_auc": 0.01, "fresh_ece": 0.01, "worst_band_ece": 0.01,
                 "worst_band_rmsce": 0.01,
                 "truth_mae": 0.01, "share_of_oracle": 0.02, "times_best_single": 0.03},
    "relative": {"holdout_n": 0.02, "fresh_n": 0.02, "policy": 0.03, "best_single": 0.03, "oracle": 0.03,
                 "calls_proposed": 0.05, "holdout_decisions": 0.05},
    "tiers": 0.05,  # each tier's count, as a share of the queue
}


def collect(data: Path, outputs: Path, params_path: Path | None = None) -> dict:
    """The figures of a demo run: its portfolio's manifest, the training metrics, the evaluation, the queue."""
    sys.path.insert(0, str(ROOT))
    from models.config import load_params
    from pipelines.quality_gate import quality_gate

    manifest = json.loads((data / "manifest.json").read_text())
    metrics = json.loads((outputs / "train" / "metrics.json").read_text())
    truth = json.loads((outputs / "evaluation.json").read_text())
    summary = json.loads((outputs / "work_queue.parquet.summary.json").read_text())
    params = load_params(params_path) if params_path else load_params()
    # the gate judges the debiased RMS calibration error (pipelines/quality_gate.py); the plug-in ECE beside it
    bands = [(band, metrics[f"dpd_{band}_rmsce_debiased"], int(metrics[f"dpd_{band}_n"]), metrics[f"dpd_{band}_ece"])
             for band in GATED_BANDS if metrics.get(f"dpd_{band}_n", 0) >= MIN_BAND]
    worst = max(bands, key=lambda band: band[1]) if bands else ("none", float("nan"), 0, float("nan"))
    passed, why = quality_gate(metrics, params["train"]["quality_gate"])
    held_out = [e for e in truth.get("off_policy", []) if e.get("estimator") == "logging policy"]
    t = truth["truth"]
    return {
        "accounts": int(manifest["accounts"]), "months": int(manifest["months"]), "seed": int(manifest["seed"]),
        "as_of": summary["as_of"], "overdue": int(manifest["counts"]["truth_cure"]),
        "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"], "brier": metrics["brier"], "ece": metrics["ece"],
        "ks": metrics["ks"], "base_rate": metrics["base_rate"], "holdout_n": int(metrics["n"]),
        "fresh_n": int(metrics["fresh_n"]), "fresh_roc_auc": metrics["fresh_roc_auc"],
        "fresh_baseline_roc_auc": metrics["fresh_baseline_roc_auc"], "fresh_ece": metrics["fresh_ece"],
        "worst_band": worst[0], "worst_band_rmsce": worst[1], "worst_band_n": worst[2], "worst_band_ece": worst[3],
        "gate_max_ece": float(params["train"]["quality_gate"]["max_ece"]), "gate_passed": bool(passed),
        "gate_why": why, "truth_mae": metrics.get("truth_mae"),
        "policy": t["policy"], "best_single": t["best_single_action"], "best_single_is": t["best_single_action_is"],
        "oracle": t["oracle"], "share_of_oracle": t["share_of_oracle"], "times_best_single": t["times_best_single"],
        "violations": int(t["violations"]), "baseline_is": t.get("baseline_is", ""),
        "holdout_decisions": int(held_out[0]["n"]) if held_out else 0,
        "queue_rows": int(summary["overdue"]), "tiers": dict(sorted(summary["tiers"].items(), key=lambda kv: -kv[1])),
        "calls_proposed": int(summary["calls_proposed"]), "calls_kept": int(summary["calls_kept"]),
        "phone_capacity": summary["phone_capacity"],
    }


def render(f: dict) -> str:
    """The README block for recorded figures `f` (markdown)."""
    gate = ("passes the quality gate and is `@champion`" if f["gate_passed"] else
            f"is registered but **not** made `@champion`: the quality gate says {f['gate_why']}")
    tiers = ", ".join(f"`{tier}` {n:,}" for tier, n in f["tiers"].items())
    return "\n".join([
        START,
        f"Measured by `make demo` (then `make readme-figures` recorded them in `docs/demo_figures.json`): portfolio "
        f"seed {f['seed']}, {f['accounts']:,} accounts x {f['months']} months, {f['overdue']:,} accounts overdue "
        f"at the as-of time {f['as_of']}.",
        "",
        f"Cure model on the time holdout (the latest 25% of as-of dates, {f['holdout_n']:,} cases; stale debt "
        "past 180 days set apart):",
        "",
        "| ROC AUC | PR AUC | Brier | ECE | KS | base rate |",
        "|---|---|---|---|---|---|",
        f"| {f['roc_auc']:.3f} | {f['pr_auc']:.3f} | {f['brier']:.4f} | {f['ece']:.3f} | {f['ks']:.3f} | "
        f"{f['base_rate']:.3f} |",
        "",
        f"On fresh arrears (1-90 days past due, {f['fresh_n']:,} holdout cases) ROC AUC {f['fresh_roc_auc']:.3f} "
        f"against {f['fresh_baseline_roc_auc']:.3f} for the three-feature baseline, ECE {f['fresh_ece']:.3f}; the "
        f"worst fresh band's calibration error, debiased as the gate judges it, is {f['worst_band_rmsce']:.3f} "
        f"({f['worst_band']} days past due, {f['worst_band_n']:,} cases, ECE {f['worst_band_ece']:.3f}; the gate "
        f"allows {f['gate_max_ece']:.2f}), so the version {gate}.",
        "",
        f"Against the simulator's exact truth at the end of the history: mean |predicted - true cure chance| = "
        f"**{f['truth_mae']:.3f}** over the {f['overdue']:,} overdue accounts.",
        "",
        f"`cureflow evaluate` on the demo (its own portfolio's truth at the end of the history): the policy's "
        f"baseline is {f['baseline_is']}; with {f['holdout_decisions']:,} held-out randomised decisions the policy "
        f"is worth JPY {f['policy']:,.0f} per overdue account against {f['best_single']:,.0f} for the best single "
        f"action in hindsight ({f['best_single_is']}) and {f['oracle']:,.0f} for the oracle "
        f"({f['share_of_oracle']:.1%} of the oracle, **{f['times_best_single']:.2f}x** the best single action), "
        f"{f['violations']} rule violations.",
        "",
        f"The demo's work queue: {f['queue_rows']:,} rows; tiers {tiers}; {f['calls_proposed']:,} calls proposed, "
        f"{f['calls_kept']:,} kept within the capacity of {f['phone_capacity']} (the others got the step's next "
        "channel).",
        END,
    ])


def differences(fresh: dict, recorded: dict) -> list[str]:
    """What a fresh demo's figures differ in beyond TOLERANCES (empty when they agree)."""
    out = [f"{k}: {fresh[k]!r} != recorded {recorded[k]!r}" for k in TOLERANCES["exact"] if fresh[k] != recorded[k]]
    for k, margin in TOLERANCES["absolute"].items():
        if abs(fresh[k] - recorded[k]) > margin:
            out.append(f"{k}: {fresh[k]:.4f} vs recorded {recorded[k]:.4f} (tolerance {margin})")
    for k, share in TOLERANCES["relative"].items():
        if abs(fresh[k] - recorded[k]) > share * max(abs(recorded[k]), 1):
            out.append(f"{k}: {fresh[k]:,.1f} vs recorded {recorded[k]:,.1f} (tolerance {share:.0%})")
    rows = max(recorded["queue_rows"], 1)
    for tier in set(fresh["tiers"]) | set(recorded["tiers"]):
        a, b = fresh["tiers"].get(tier, 0), recorded["tiers"].get(tier, 0)
        if abs(a - b) > TOLERANCES["tiers"] * rows:
            out.append(f"tier {tier!r}: {a} vs recorded {b} (tolerance {TOLERANCES['tiers']:.0%} of the queue)")
    return out


def rewrite_readme(block: str, readme: Path = README) -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no demo-figures markers")
    head, rest = text.split(START, 1)
    readme.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "portfolio")
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    parser.add_argument("--check", action="store_true", help="compare with the recorded figures, write nothing")
    args = parser.parse_args()
    fresh = collect(args.data, args.outputs)
    if args.check:
        problems = differences(fresh, json.loads(RECORD.read_text()))
        print("\n".join(problems) or "the demo reproduces the recorded figures")
        return 1 if problems else 0
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(fresh, indent=2) + "\n", encoding="utf-8")
    rewrite_readme(render(fresh))
    print(f"recorded {RECORD.relative_to(ROOT)} and rewrote the README's demo figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
