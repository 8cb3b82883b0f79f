"""The closed loop's retrain and the quality gate, without the loop: a simulated portfolio with no experiment
(`--preset`, `--accounts`, `--months` of history; the closed loop starts from 12 months of 5,000 accounts and
retrains every week for 26), trained as `benchmarks/closed_loop.py` trains it (`pipelines.train.fit`), then:

- the gate's verdict and the fresh bands' figures (cases, ROC AUC beside the baseline's, ECE and the debiased
  RMS calibration error the gate judges), and the verdict the plug-in ECE would have given (the gate before);
- per band, the cure rate in training and in the holdout (a time shift shows here) and the mean prediction;
- per band, the ECE and the debiased error a perfectly calibrated model with the same predictions shows by chance
  alone (`models.metrics.ece_by_chance`): their means and how often each is above the gate's `max_ece`.

Run: .venv/bin/python benchmarks/retrain_gate.py [--preset lease] [--accounts 5000] [--months 18] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from models.config import load_params
from models.contract import validate, write_dir
from models.metrics import debiased_calibration_error, ece_by_chance, expected_calibration_error
from pipelines.features import build_examples
from pipelines.quality_gate import quality_gate
from pipelines.simulate import Live, with_preset
from pipelines.train import fit, split_stale, time_split

BANDS = (("1-30", 0, 30), ("31-90", 30, 90), ("fresh (1-90)", 0, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lease")
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    params = with_preset(load_params(), args.preset, experiment_share=0.0)
    live = Live(args.accounts, args.months, args.seed, params)
    gate = params["train"]["quality_gate"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        portfolio = validate(live.tables())
        write_dir(portfolio, data)
        examples = build_examples(portfolio, data, params, live.as_of.isoformat(), log=lambda *_: None)
        result = fit(data, params, live.as_of.isoformat(), log=lambda *_: None, examples=examples)
    cure = params["cure"]
    train, _ = time_split(examples.cure, float(cure["holdout_fraction"]), int(cure["horizon_days"]))
    train, _ = split_stale(train, params)
    ok, why = quality_gate(result.metrics, gate)
    m = result.metrics
    print(f"{args.preset}, {args.accounts:,} accounts, {args.months} months, seed {args.seed}: gate "
          f"{'passed' if ok else 'FAILED: ' + why}")
    old_ok, old_why = quality_gate({k: v for k, v in m.items() if not k.endswith("rmsce_debiased")}, gate)
    print(f"  the gate on the plug-in ECE (before): {'passed' if old_ok else 'FAILED: ' + old_why}")
    oof = {k: m.get(f"oof_{k}_roc_auc", float("nan")) for k in ("booster", "baseline")}
    print(f"fresh arrears ROC AUC {m['fresh_roc_auc']:.3f} (baseline {m['fresh_baseline_roc_auc']:.3f}); out of fold "
          f"booster {oof['booster']:.3f}, baseline {oof['baseline']:.3f}")
    hold = result.holdout
    for label, low, high in BANDS:
        on = (hold["days_past_due"] > low) & (hold["days_past_due"] <= high)
        was = (train["days_past_due"] > low) & (train["days_past_due"] <= high)
        y, p = hold["label"][on].to_numpy(), hold["p"][on].to_numpy()
        limit = float(gate["max_ece"])
        chance = ece_by_chance(p)
        debiased = ece_by_chance(p, measure=debiased_calibration_error)
        print(f"  {label}: {on.sum():,} holdout cases, cure rate {train['label'][was].mean():.3f} in training and "
              f"{y.mean():.3f} in the holdout, mean prediction {p.mean():.3f}, "
              f"ECE {expected_calibration_error(y, p):.3f}, debiased RMS error {debiased_calibration_error(y, p):.3f}; "
              f"a calibrated model by chance: ECE {chance.mean():.3f} (above {limit} in "
              f"{np.mean(chance > limit):.0%} of draws), debiased {debiased.mean():.3f} (above in "
              f"{np.mean(debiased > limit):.0%})")


if __name__ == "__main__":
    main()
