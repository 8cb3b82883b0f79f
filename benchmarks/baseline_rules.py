"""Benchmark: how the learned baseline replaces the playbook, rule against rule, valued with the truth.

For each preset x share of randomised decisions x seed (the portfolios of `benchmarks/nba_presets.py`, in the
same work directory), one training (`pipelines.train.fit`, what `cureflow train` fits) and, on its randomised
decisions, four ways to choose the baseline, each valued with the simulator's exact truth on the evaluation
portfolio (50,000 accounts, seed + 1000) as a ratio to the best single action in hindsight:

- `playbook`: the shipped playbook, always;
- `bound95`: the best single action by money, replacing the playbook only where its in-sample improvement
  has a one-sided 95% lower bound above zero (the rule before 4 Dec);
- `in-sample`: the same pick where its in-sample estimate is above zero;
- `shares, cross-fitted`: the pick on shares of the arrears, tested fold by fold, each decision read on its
  own doubly robust scores (`policy.safe.baseline_test: decision`, the rule from 4 to 5 Dec;
  `pipelines.train._learned_baseline` at `policy.safe.baseline_z`);
- `shares, cross-fitted, 95%`: the same test, the pick kept only where its cross-fitted improvement has a
  one-sided 95% lower bound above zero (baseline_z 1.645);
- `pooled by channel`: the same folds, the test read as the model's difference on every decision corrected
  by each channel's mean residual (`models.safe.pooled_bound`; `policy.safe.baseline_test: channel`, what
  training does now), and the pick read the same way (`models.safe.pooled_scores`, from the fifteenth session);
- `pooled test, doubly robust pick`: the pooled test with the pick on the doubly robust shares (the
  fourteenth session's rule);
- `pooled by channel x offer`: the pooled pick and test with one correction per channel and offer.

Every rule is valued as the policy it implies with no departure (the baseline for every overdue account;
the day's call capacity is not applied), so the columns differ only by the rule.

    .venv/bin/python benchmarks/baseline_rules.py --presets lease digital mature drawn --shares 0.05 0.15 \
        --seeds 1 2 3 --workdir outputs/bench_nba --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

RULES = ("playbook", "bound95", "in-sample", "shares, cross-fitted", "shares, cross-fitted, 95%", "pooled by channel",
         "pooled test, doubly robust pick", "pooled by channel x offer")


def cell(workdir: Path, preset: str, share: float, seed: int, size: int = 20_000, eval_accounts: int = 50_000) -> dict:
    from nba_presets import trained  # this directory, as the script's own

    from models import safe
    from models.contract import read_dir
    from models.playbook import Playbook
    from pipelines.evaluate import TrueValues
    from pipelines.train import _learned_baseline, _logged_values, _pooled, _prefs

    cell_ = trained(workdir, preset, size, share, seed, eval_accounts)
    params, bundle, response, names, config = cell_.params, cell_.bundle, cell_.response, cell_.names, cell_.config
    portfolio, eval_dir = cell_.portfolio, cell_.eval_dir
    out = {"preset": preset, "share": share, "seed": seed}
    windows = tuple(w.name for w in config.windows)
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], windows))
    rules = {"playbook": playbook}
    if response is not None:
        logs = cell_.logs
        logged = _logged_values(response, logs, names, params, portfolio)
        value, scores, allowed = logged.value, logged.scores, logged.allowed
        current = playbook.base(value[:, :-1], _prefs(playbook, logs, windows))
        single, means = safe.best_single(scores, allowed, safe.action_design(response.space.actions[:-1]))
        money = safe.SafePolicy(single, ranking=safe.ranking(means))
        test = safe.lower_bound(scores, money.base(value[:, :-1]), current, 1.645, logs["action"].to_numpy())
        least = int(params["policy"]["safe"]["min_departures"])
        enough = test["observed"] >= least
        rules["bound95"] = money if enough and test["lcb"] > 0 else playbook
        rules["in-sample"] = money if enough and test["improvement"] > 0 else playbook
        evidence: dict = {}
        rules["shares, cross-fitted"] = _learned_baseline(
            playbook, value, scores, allowed, logs, response.space, float(params["policy"]["safe"]["baseline_z"]),
            evidence, least, int(params["policy"]["safe"]["baseline_folds"]))
        crossed = evidence.get("best_single_vs_configured")
        sure = (crossed is not None and crossed["observed"] >= least
                and crossed["improvement"] - 1.645 * crossed["se"] > 0)
        rules["shares, cross-fitted, 95%"] = rules["shares, cross-fitted"] if sure else playbook
        by_channel = _pooled(logged, logs, response.space, "channel")
        for rule, pooled in (("pooled by channel", by_channel),
                             ("pooled test, doubly robust pick", dataclasses.replace(by_channel, pick=False)),
                             ("pooled by channel x offer", _pooled(logged, logs, response.space, "channel_offer"))):
            read: dict = {}  # its own evidence: `evidence` stays the decision-by-decision test's (cross_fitted)
            rules[rule] = _learned_baseline(
                playbook, value, scores, allowed, logs, response.space, float(params["policy"]["safe"]["baseline_z"]),
                read, least, int(params["policy"]["safe"]["baseline_folds"]), pooled=pooled)
            out[f"{rule} test"] = read.get("best_single_vs_configured")
        out.update(in_sample_t=test["improvement"] / test["se"] if test["se"] else None,
                   cross_fitted=evidence.get("best_single_vs_configured"), randomised=len(logs))
    else:
        rules.update({rule: playbook for rule in RULES[1:]})
    as_of = pd.Timestamp(params["simulate"]["end"])
    eval_portfolio = read_dir(eval_dir)
    truth = pd.read_parquet(eval_dir / "truth" / "actions.parquet")
    tv = TrueValues.of(bundle, eval_portfolio, truth, as_of)
    cons = bundle.constraints(eval_portfolio, as_of)
    T, ok = tv.value[:, :-1], tv.allowed[:, :-1]
    n = len(T)
    X, fnames = cons["X"], bundle.feature_names
    mask = np.where(ok, 0.0, -np.inf)
    best_single = float(np.where(ok, T, 0.0).mean(axis=0).max())
    for rule, policy in rules.items():
        prefs = policy.preferences_of({name: X[:, j] for j, name in enumerate(fnames)}, windows)
        action = policy.base(mask, prefs)
        worth = np.where(action >= 0, T[np.arange(n), np.maximum(action, 0)], 0.0).mean()
        out[rule] = float(worth / best_single) if best_single > 0 else float("nan")
        out[f"{rule} learned"] = policy.playbook is None
    return out


def table(cells: pd.DataFrame) -> pd.DataFrame:
    """Preset x share: each rule's value / the best single action in hindsight, per seed and on average."""
    rows = []
    for (preset, share), g in cells.groupby(["preset", "share"], sort=True):
        g = g.sort_values("seed")
        row = {"preset": preset, "randomised": share, "seeds": " / ".join(str(s) for s in g["seed"])}
        for rule in RULES:
            row[rule] = " / ".join(f"{v:.2f}" + ("*" if rule != "playbook" and learned else "")
                                   for v, learned in zip(g[rule], g[f"{rule} learned"], strict=True))
        for rule in RULES[3:]:
            row[f"below the playbook ({rule})"] = int((g[rule] < g["playbook"] - 1e-9).sum())
            row[f"mean ({rule})"] = round(float(g[rule].mean()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lease", "digital", "mature", "drawn"])
    parser.add_argument("--shares", nargs="+", type=float, default=[0.05, 0.15])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_nba"))
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / "baseline_rules.jsonl"
    from nba_presets import finished, run_cells  # this directory, as the script's own

    done = finished(out, ("preset", "share", "seed"))
    todo = [(args.workdir, *c) for c in product(args.presets, args.shares, args.seeds) if c not in done]
    run_cells(out, cell, todo, args.jobs,
              lambda result: {k: v for k, v in result.items() if k != "cross_fitted" and not k.endswith(" test")},
              default=str)
    cells = pd.DataFrame(map(json.loads, out.read_text().splitlines()))
    keep = cells["preset"].isin(args.presets) & cells["share"].isin(args.shares) & cells["seed"].isin(args.seeds)
    cells = cells[keep]
    print("value / the best single action in hindsight (* the learned baseline replaced the playbook)")
    print(table(cells).to_markdown(index=False))


if __name__ == "__main__":
    main()
