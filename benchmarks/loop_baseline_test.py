"""Diagnosis: the learned baseline's test at one week of a closed-loop run, read in shares of the arrears (as
shipped) and in money, cross-fitted, beside the in-sample improvement by arrears quartile.

Re-fits the week's training exactly as `benchmarks/closed_loop.py` did (the world's data directory holds the
last week's export, its decision log the loop's records; the week's as-of is read from weeks.jsonl), captures
what `pipelines.train._learned_baseline` is given, and runs `models.safe.honest_improvement` on both scales.

    .venv/bin/python benchmarks/loop_baseline_test.py --workdir outputs/loop20k --preset digital --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_loop"))
    parser.add_argument("--preset", default="digital")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--week", type=int, default=None, help="the week whose retrain to re-run (default: the last)")
    args = parser.parse_args()

    import pipelines.train as train
    from models import safe
    from models.config import load_params
    from pipelines.simulate import with_preset

    here = args.workdir / f"{args.preset}_{args.seed}"
    weeks = pd.read_json(args.workdir / "weeks.jsonl", lines=True)
    mine = weeks[(weeks["preset"] == args.preset) & (weeks["seed"] == args.seed)]
    week = int(mine["week"].max()) if args.week is None else args.week
    as_of = mine.loc[mine["week"] == week, "as_of"].iloc[0]
    seen: dict = {}
    learned_baseline = train._learned_baseline

    def capture(base, value, scores, allowed, logs, space, *rest, **kwargs):
        seen.update(base=base, value=value, scores=scores, allowed=allowed, logs=logs, space=space)
        return learned_baseline(base, value, scores, allowed, logs, space, *rest, **kwargs)

    train._learned_baseline = capture
    train.fit(here / "data", with_preset(load_params(), args.preset, experiment_share=0.0), history_end_at=str(as_of),
              log=lambda *_: None, decision_log=f"sqlite:///{here / 'decisions.db'}")
    if not seen:
        raise SystemExit("that week's training had no response model: no learned baseline was tested")
    base, value, scores, allowed, logs, space = (seen[k] for k in ("base", "value", "scores", "allowed", "logs",
                                                                    "space"))
    design = safe.action_design(space.actions[:-1])
    arrears = logs["arrears"].to_numpy(dtype=np.float64)
    current = base.base(value[:, :-1], train._prefs(base, logs, space.windows))
    fold = pd.util.hash_array(logs["account_id"].astype(str).to_numpy(dtype=object)) % 2
    shares = safe.per_unit(scores, arrears)
    print(f"{args.preset} seed {args.seed}, week {week} ({as_of}), {len(logs):,} logged decisions")
    for name, values in (("shares of the arrears", shares), ("money (JPY)", scores)):
        test = safe.honest_improvement(values, allowed, design, current, value[:, :-1], fold, 0.0,
                                       logs["action"].to_numpy(), logs["propensity"].to_numpy(dtype=float))
        single, _ = safe.best_single(values, allowed, design)
        print(f"  {name}: pick {train._action_text(space, single)}; cross-fitted improvement "
              f"{test['improvement']:+,.4f} (se {test['se']:,.4f}), {test['observed']} observed, "
              f"{test['effective']:.1f} by weight")
    single, means = safe.best_single(shares, allowed, design)
    chosen = safe.SafePolicy(ranking=safe.ranking(means)).base(value[:, :-1])
    frame = pd.DataFrame({"arrears quartile": pd.qcut(arrears, 4, labels=False, duplicates="drop"),
                          "arrears": arrears, "JPY": safe._improvement(scores, chosen, current),
                          "share": safe._improvement(shares, chosen, current)})
    col = np.where(chosen >= 0, chosen, scores.shape[1] - 1)
    taken = logs["action"].to_numpy()
    by_base = pd.DataFrame({"baseline action": [train._action_text(space, a) for a in current],
                            "differs": chosen != current, "took the pick": (col == taken) & (chosen != current),
                            "share": safe._improvement(shares, chosen, current)})
    print("  the shares' pick against the baseline, in sample, by the baseline's action (where the pick was never "
          "taken, its side is the response model's opinion alone):")
    print(by_base.groupby("baseline action").agg(decisions=("share", "size"), differs=("differs", "sum"),
                                                  took_the_pick=("took the pick", "sum"),
                                                  improvement_share=("share", "mean")).round(3).to_string())
    print("  the shares' pick against the baseline, in sample, by arrears quartile (doubly robust scores):")
    print(frame.groupby("arrears quartile").agg(decisions=("arrears", "size"), median_arrears=("arrears", "median"),
                                                improvement_JPY=("JPY", "mean"),
                                                improvement_share=("share", "mean")).round(3).to_string())


if __name__ == "__main__":
    main()
