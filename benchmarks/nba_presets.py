"""Benchmark: the next-best-action policy on every simulator preset, against its baseline, the best single
action for everyone and the oracle, valued with the simulator's exact truth on a portfolio it never saw.

For each preset x training size x share of randomised decisions x seed: simulate a training portfolio
(seed s) and an evaluation portfolio of the same world (seed s + 1000), train with `pipelines.train.fit`
(exactly what `cureflow train` fits), score the evaluation portfolio at the end of its history with
exploration off, and value every account's decision with the truth. One JSON line per cell goes to
`<workdir>/cells.jsonl` (a rerun skips finished cells); the table (mean and a 95% t-interval over seeds)
and the plot of value against training size are written at the end.

    .venv/bin/python benchmarks/nba_presets.py --sizes 20000 100000 --shares 0 0.05 0.15 --seeds 1 2 3 \
        --workdir outputs/bench_nba --jobs 2

`--unreached-compare`: each cell's response model three times on the same examples and cure model: assuming an
unreached attempt changes nothing, by channel, and `auto` (tested on the held-out decisions, the default);
greedy and safe policies valued with the truth, ratios to the first (`unreached_table`).

    .venv/bin/python benchmarks/nba_presets.py --unreached-compare --sizes 20000 --shares 0.15 --seeds 1 2 \
        --workdir outputs/bench_unreached --jobs 2

`--bau-compare`: each cell is trained twice on the same examples, without and with the business-as-usual
decisions (params response.business_as_usual.use false / true; the cure model is the same), and both
policies are valued on the same evaluation accounts: a paired before/after, with the ratio after / before
per cell and a 95% t-interval over seeds (`bau_table`).

    .venv/bin/python benchmarks/nba_presets.py --bau-compare --sizes 20000 --shares 0.05 0.15 --seeds 1 2 \
        --workdir outputs/bench_bau --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

PRESETS = ("lease", "digital", "mature", "drawn")


def _simulate(workdir: Path, preset: str, accounts: int, share: float, seed: int) -> Path:
    from pipelines.simulate import main as simulate

    out = workdir / "data" / f"{preset}_{accounts}_{share:g}_{seed}"
    if not (out / "manifest.json").exists():
        simulate(accounts=accounts, months=24, seed=seed, out=out, preset=preset, experiment_share=share)
    return out


def finished(path: Path, keys: tuple[str, ...]) -> set[tuple]:
    """The cells a results file (one JSON object a line) already holds, as tuples of `keys`: a rerun skips them."""
    if not path.exists():
        return set()
    return {tuple(c[k] for k in keys) for c in map(json.loads, path.read_text().splitlines())}


def run_cells(path: Path, cell, todo: list[tuple], jobs: int, shown=lambda result: result, default=float
              ) -> list[dict]:
    """`cell(*args)` for each of `todo`, `jobs` at a time, in order: each result appended to `path` (one JSON
    object a line, as `finished` reads it back; `default` writes what JSON does not) and printed (`shown` picks
    what); returns the results."""
    results = []
    with ProcessPoolExecutor(max_workers=max(jobs, 1)) as pool:
        for result in pool.map(cell, *zip(*todo, strict=True)) if todo else []:
            with path.open("a") as fh:
                fh.write(json.dumps(result, default=default) + "\n")
            print(json.dumps(shown(result), default=default), flush=True)
            results.append(result)
    return results


def trained(workdir: Path, preset: str, size: int, share: float, seed: int, eval_accounts: int = 50_000):
    """One training of a cell as `cureflow train` fits it, and the randomised decisions its response model and
    learned baseline read: params, the training and evaluation folders, the training portfolio, the bundle,
    the response model (None without randomised decisions), the logged decisions, the feature names."""
    from types import SimpleNamespace

    from models.config import load_params
    from models.contract import read_dir
    from models.features import FeatureConfig, feature_names
    from pipelines.features import build_examples
    from pipelines.train import fit, fit_response_model

    params = load_params()
    train_dir = _simulate(workdir, preset, size, share, seed)
    eval_dir = _simulate(workdir, preset, eval_accounts, share, seed + 1000)
    portfolio = read_dir(train_dir)
    examples = build_examples(portfolio, train_dir, params, log=lambda *_: None)
    bundle = fit(train_dir, params, log=lambda *_: None, examples=examples).bundle
    config = FeatureConfig.from_params(params)
    names = feature_names(config)
    response, resp_train, resp_holdout, _ = fit_response_model(examples.decisions, names, params, config,
                                                               log=lambda *_: None)
    return SimpleNamespace(params=params, train_dir=train_dir, eval_dir=eval_dir, portfolio=portfolio,
                           bundle=bundle, response=response, logs=pd.concat([resp_train, resp_holdout],
                                                                            ignore_index=True),
                           names=names, config=config)


def cell(workdir: Path, preset: str, size: int, share: float, seed: int, eval_accounts: int) -> dict:
    """Train on one portfolio of `preset`, value the policy on another of the same world."""
    from models.config import load_params
    from models.contract import read_dir
    from pipelines import evaluate
    from pipelines.train import fit, truth_gap

    started = time.perf_counter()
    params = load_params()
    train_dir = _simulate(workdir, preset, size, share, seed)
    eval_dir = _simulate(workdir, preset, eval_accounts, share, seed + 1000)
    result = fit(train_dir, params, log=lambda *_: None)
    bundle, portfolio = result.bundle, read_dir(eval_dir)
    as_of = pd.Timestamp(params["simulate"]["end"])
    t = evaluate.truth_values(bundle, portfolio, pd.read_parquet(eval_dir / "truth" / "actions.parquet"), as_of, 0.0)
    gap = truth_gap(eval_dir, bundle, portfolio, as_of)
    safe = bundle.safe.evidence if bundle.safe is not None else {}
    return {"preset": preset, "size": size, "share": share, "seed": seed, "accounts": t["accounts"],
            "policy": t["policy"], "baseline": t.get("baseline", float("nan")),
            "best_single": t["best_single_action"], "best_single_is": t["best_single_action_is"],
            "oracle": t["oracle"], "share_of_oracle": t["share_of_oracle"],
            "times_best_single": t["times_best_single"], "violations": t["violations"] + len(t["audit_violations"]),
            "cure_gap": float(np.mean(np.abs(gap["p"] - gap["p_true"]))) if gap is not None and len(gap) else None,
            "departures": t.get("departures"), "safe": safe, "seconds": round(time.perf_counter() - started, 1)}


def bau_cell(workdir: Path, preset: str, size: int, share: float, seed: int, eval_accounts: int,
             floor: float = 0.01) -> dict:
    """One portfolio, three trainings: the response model without the business-as-usual decisions, with them
    (params.yaml's overlap bounds), and with them under a lower floor `floor` (arm `low`: the rule's rare
    deviations, the decisions that explore, join at weights up to 1 / floor); same examples, same cure model,
    each policy valued with the truth on the same evaluation accounts."""
    import copy

    from models.config import load_params
    from models.contract import read_dir
    from pipelines.features import build_examples
    from pipelines.train import fit

    started = time.perf_counter()
    before = load_params()
    before["response"]["business_as_usual"]["use"] = False
    before["cure"]["n_folds"] = 3  # the cure model is the same in both arms; 3 folds keep the run small
    after = copy.deepcopy(before)
    after["response"]["business_as_usual"]["use"] = True
    train_dir = _simulate(workdir, preset, size, share, seed)
    eval_dir = _simulate(workdir, preset, eval_accounts, share, seed + 1000)
    train_portfolio = read_dir(train_dir)
    examples = build_examples(train_portfolio, train_dir, after, log=lambda *_: None)  # BAU rows included
    result = fit(train_dir, before, log=lambda *_: None, examples=examples)
    low = copy.deepcopy(after)
    low["response"]["business_as_usual"]["min_propensity"] = floor
    lines: list[str] = []
    bundles, summaries = {"before": result.bundle}, {}
    for arm, params in (("after", after), ("low", low)):
        bundles[arm] = arm_bundle(result.bundle, examples, params, train_portfolio, lines.append)
        summaries[arm] = getattr(bundles[arm].response, "business_as_usual_", None)
    portfolio, as_of = read_dir(eval_dir), pd.Timestamp(before["simulate"]["end"])
    truth = pd.read_parquet(eval_dir / "truth" / "actions.parquet")
    out = {"preset": preset, "size": size, "share": share, "seed": seed,
           "bau": summaries["after"], "bau_low": summaries["low"], "floor_low": floor, "log": lines}
    for arm, bundle in bundles.items():
        out.update(arm_values(arm, bundle, portfolio, truth, as_of),
                   **{f"{arm}_baseline": bundle.safe.evidence.get("baseline_text") if bundle.safe else None})
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def unreached_cell(workdir: Path, preset: str, size: int, share: float, seed: int, eval_accounts: int) -> dict:
    """One portfolio, three response models on the same examples and cure model: an unreached attempt assumed
    to change nothing (`none`, the structure before the test existed), by channel (`per_channel`, forced), and
    `auto` (params.yaml's default: by channel only where the held-out decisions say so); each policy (safe and
    greedy) valued with the truth on the same evaluation accounts, with each model's gain error."""
    from models.config import load_params
    from models.contract import read_dir
    from pipelines.features import build_examples
    from pipelines.train import fit

    started = time.perf_counter()
    arms = {}
    for arm in ("none", "per_channel", "auto"):
        arms[arm] = load_params()
        arms[arm]["response"]["unreached"] = arm
        arms[arm]["cure"]["n_folds"] = 3  # the cure model is the same in every arm; 3 folds keep the run small
    train_dir = _simulate(workdir, preset, size, share, seed)
    eval_dir = _simulate(workdir, preset, eval_accounts, share, seed + 1000)
    train_portfolio = read_dir(train_dir)
    examples = build_examples(train_portfolio, train_dir, arms["none"], log=lambda *_: None)
    result = fit(train_dir, arms["none"], log=lambda *_: None, examples=examples)
    lines: list[str] = []
    bundles, evidence = {"none": result.bundle}, {}
    for arm in ("per_channel", "auto"):
        bundles[arm] = arm_bundle(result.bundle, examples, arms[arm], train_portfolio, lines.append)
        evidence[arm] = getattr(bundles[arm].response, "unreached_evidence_", None)
    portfolio, as_of = read_dir(eval_dir), pd.Timestamp(arms["none"]["simulate"]["end"])
    truth = pd.read_parquet(eval_dir / "truth" / "actions.parquet")
    out = {"preset": preset, "size": size, "share": share, "seed": seed, "evidence": evidence["auto"], "log": lines}
    for arm, bundle in bundles.items():
        if bundle.response is not None:
            out.update(arm_values(arm, bundle, portfolio, truth, as_of))
    out["chosen"] = (evidence["auto"] or {}).get("chosen")
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def arm_bundle(bundle, examples, params: dict, portfolio, log):
    """`bundle` with the response model and safe policy refitted under `params` (an arm of a paired comparison:
    the same examples and cure model)."""
    import copy
    import dataclasses

    from models.features import FeatureConfig, feature_names
    from pipelines.train import fit_response_model, fit_safe_policy

    config = FeatureConfig.from_params(params)
    names = feature_names(config)
    response, resp_train, resp_holdout, _ = fit_response_model(examples.decisions, names, params, config, log=log)
    safe_policy = fit_safe_policy(response, resp_train, resp_holdout, names, params, portfolio, log=log)
    return dataclasses.replace(bundle, params=copy.deepcopy(params), response=response, safe=safe_policy)


def arm_values(arm: str, bundle, portfolio, truth: pd.DataFrame, as_of: pd.Timestamp) -> dict:
    """An arm's true values on the evaluation accounts: the served (safe) policy, the greedy one (margin 0),
    the gain error, departures and violations, beside the best single action and the oracle."""
    import dataclasses

    from pipelines import evaluate

    t = evaluate.truth_values(bundle, portfolio, truth, as_of, 0.0)
    greedy = dataclasses.replace(bundle, safe=dataclasses.replace(bundle.safe, margin=0.0))
    return {f"{arm}_greedy": evaluate.truth_values(greedy, portfolio, truth, as_of, 0.0)["policy"],
            f"{arm}_gain_mae": gain_error(bundle, portfolio, truth, as_of),
            f"{arm}_policy": t["policy"], f"{arm}_departures": t.get("departures"),
            f"{arm}_violations": t["violations"] + len(t["audit_violations"]),
            "best_single": t["best_single_action"], "oracle": t["oracle"], "accounts": t["accounts"]}


def unreached_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Preset x size x share: the structures side by side (ratios to `none`, the structure before the test)."""
    rows = []
    for (preset, size, share), g in cells.groupby(["preset", "size", "share"], sort=True):
        row = {"preset": preset, "accounts": size, "randomised": share, "seeds": len(g),
               "auto chose per_channel": f"{(g['chosen'] == 'per_channel').sum()} of {len(g)}"}
        for arm in ("per_channel", "auto"):
            row[f"{arm}: greedy / none"] = interval(g[f"{arm}_greedy"] / g["none_greedy"])
            row[f"{arm}: gain error / none"] = interval(g[f"{arm}_gain_mae"] / g["none_gain_mae"])
            row[f"{arm}: safe / none"] = interval(g[f"{arm}_policy"] / g["none_policy"])
        for arm in ("none", "auto"):
            row[f"safe {arm} / best single"] = interval(g[f"{arm}_policy"] / g["best_single"])
            row[f"safe {arm} / oracle"] = interval(g[f"{arm}_policy"] / g["oracle"])
            row[f"greedy {arm} / oracle"] = interval(g[f"{arm}_greedy"] / g["oracle"])
            row[f"departures ({arm})"] = f"{g[f'{arm}_departures'].astype(float).mean():.0f}"
        row["violations"] = int(sum(g[f"{a}_violations"].sum() for a in ("none", "per_channel", "auto")))
        rows.append(row)
    return pd.DataFrame(rows)


def gain_error(bundle, portfolio, truth: pd.DataFrame, as_of: pd.Timestamp) -> float:
    """The response model's mean absolute error, against the truth, of every allowed contact's gain in the
    chance of a payment within 7 days over no contact, over the overdue accounts (what the policy ranks)."""
    from pipelines.evaluate import TrueValues

    tv = TrueValues.of(bundle, portfolio, truth, as_of)
    feats = bundle.features(portfolio, as_of).set_index("account_id").loc[tv.account_id]
    q = bundle.response.predict_matrix(feats[bundle.feature_names].to_numpy(dtype=np.float64))
    err = np.abs((q[:, :-1] - q[:, -1:]) - (tv.P[:, :-1] - tv.P[:, -1:]))
    return float(err[tv.allowed[:, :-1]].mean())


def bau_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Preset x size x share: the policy's true value before and after adding business-as-usual decisions."""
    cells = cells.assign(ratio=cells["after_policy"] / cells["before_policy"],
                         before_single=cells["before_policy"] / cells["best_single"],
                         after_single=cells["after_policy"] / cells["best_single"],
                         before_oracle=cells["before_policy"] / cells["oracle"],
                         after_oracle=cells["after_policy"] / cells["oracle"],
                         greedy_ratio=cells["after_greedy"] / cells["before_greedy"],
                         before_greedy_single=cells["before_greedy"] / cells["best_single"],
                         after_greedy_single=cells["after_greedy"] / cells["best_single"],
                         mae_ratio=cells["after_gain_mae"] / cells["before_gain_mae"],
                         low_ratio=cells["low_policy"] / cells["before_policy"],
                         low_greedy_ratio=cells["low_greedy"] / cells["before_greedy"],
                         low_mae_ratio=cells["low_gain_mae"] / cells["before_gain_mae"],
                         used_low=[(b or {}).get("used", 0) for b in cells["bau_low"]],
                         used=[(b or {}).get("used", 0) for b in cells["bau"]],
                         of=[(b or {}).get("decisions", 0) for b in cells["bau"]])
    rows = []
    for (preset, size, share), g in cells.groupby(["preset", "size", "share"], sort=True):
        rows.append({"preset": preset, "accounts": size, "randomised": share, "seeds": len(g),
                     "BAU used / considered": f"{g['used'].mean():,.0f} / {g['of'].mean():,.0f}",
                     "after / before": interval(g["ratio"]),
                     "before / best single": interval(g["before_single"]),
                     "after / best single": interval(g["after_single"]),
                     "before / oracle": interval(g["before_oracle"]), "after / oracle": interval(g["after_oracle"]),
                     "departures before, after": f"{g['before_departures'].astype(float).mean():.0f}, "
                                                 f"{g['after_departures'].astype(float).mean():.0f}",
                     "greedy after / before": interval(g["greedy_ratio"]),
                     "greedy / best single, before": interval(g["before_greedy_single"]),
                     "greedy / best single, after": interval(g["after_greedy_single"]),
                     "gain error after / before": interval(g["mae_ratio"]),
                     "floor 0.01: BAU used": f"{g['used_low'].mean():,.0f}",
                     "floor 0.01: after / before": interval(g["low_ratio"]),
                     "floor 0.01: greedy after / before": interval(g["low_greedy_ratio"]),
                     "floor 0.01: gain error after / before": interval(g["low_mae_ratio"]),
                     "violations": int(g["before_violations"].sum() + g["after_violations"].sum()
                                       + g["low_violations"].sum())})
    return pd.DataFrame(rows)


def _run(args: tuple) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mode, *rest = args
    return {"bau": bau_cell, "unreached": unreached_cell}.get(mode, cell)(*rest)


def interval(values: pd.Series) -> str:
    """mean [95% t-interval] over seeds (the mean alone for one seed)."""
    from scipy import stats

    v = values.dropna().to_numpy(dtype=float)
    if len(v) < 2:
        return f"{v.mean():.2f}" if len(v) else "-"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.2f} [{v.mean() - half:.2f}, {v.mean() + half:.2f}]"


def table(cells: pd.DataFrame) -> pd.DataFrame:
    """Preset x size x share: the policy against the best single action and the oracle, over seeds."""
    cells = cells.assign(vs_single=cells["policy"] / cells["best_single"],
                         vs_oracle=cells["policy"] / cells["oracle"],
                         gain_jpy=cells["policy"] - cells["best_single"])
    rows = []
    for (preset, size, share), g in cells.groupby(["preset", "size", "share"], sort=True):
        rows.append({"preset": preset, "accounts": size, "randomised": share, "seeds": len(g),
                     "policy / best single": interval(g["vs_single"]),
                     "policy / oracle": interval(g["vs_oracle"]),
                     "policy - best single (JPY)": interval(g["gain_jpy"]),
                     "departures": interval(g["departures"].astype(float)) if "departures" in g else "-",
                     "learned baseline": f"{sum(_learned(s) for s in g['safe'])} of {len(g)}" if "safe" in g else "-",
                     "per lifestyle": _per_lifestyle(g["safe"]) if "safe" in g else "-",
                     "violations": int(g["violations"].sum()), "cure gap": interval(g["cure_gap"])})
    return pd.DataFrame(rows)


def _per_lifestyle(evidence: pd.Series) -> str:
    """How many cells served a ranking per lifestyle, and each cell's test against the one ranking (improvement
    and its se, share of the arrears), or why there was none (the cell's `safe.by_segment` evidence)."""
    tests = [e.get("by_segment") if isinstance(e, dict) else None for e in evidence]
    said = []
    for test in tests:
        one = (test or {}).get("vs one ranking") or {}
        said.append(f"{one['improvement']:+.3f} ({one['se']:.3f})" if "improvement" in one and "se" in one
                    else (test or {}).get("why", "not tested"))
    adopted = sum(bool((t or {}).get("adopted")) for t in tests)
    return f"{adopted} of {len(tests)}: " + "; ".join(said)


def _learned(evidence) -> bool:
    """Whether a cell's baseline was the learned best single action (not the playbook it replaces)."""
    return isinstance(evidence, dict) and evidence.get("baseline_text", "the playbook") != "the playbook"


def plot(cells: pd.DataFrame, out: Path) -> None:
    """Share of the oracle's gain (policy and best single action) against training size, per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted(cells["preset"].unique())
    fig, axes = plt.subplots(1, len(presets), figsize=(4 * len(presets), 3.4), sharey=True, squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        for share, g in cells[cells["preset"] == preset].groupby("share"):
            by = g.assign(p=g["policy"] / g["oracle"], b=g["best_single"] / g["oracle"]).groupby("size")
            ax.errorbar(by["p"].mean().index, by["p"].mean(), yerr=by["p"].std().fillna(0), marker="o",
                        capsize=3, label=f"policy, {share:.0%} randomised")
            ax.plot(by["b"].mean().index, by["b"].mean(), ls="--", color="grey")
        ax.set_xscale("log")
        ax.set_title(preset)
        ax.set_xlabel("training accounts")
        ax.axhline(0, color="black", lw=0.5)
    axes[0][0].set_ylabel("share of the oracle's gain")
    fig.suptitle("policy by share of randomised decisions; dashed: the best single action for everyone", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[20_000])
    parser.add_argument("--shares", nargs="+", type=float, default=[0.15])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--eval-accounts", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_nba"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="only tabulate the finished cells")
    parser.add_argument("--bau-compare", action="store_true",
                        help="train each cell without and with the business-as-usual decisions (paired)")
    parser.add_argument("--unreached-compare", action="store_true",
                        help="train each cell's response model assuming an unreached attempt changes nothing, by "
                             "channel, and as tested on the held-out decisions (paired)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    mode = "bau" if args.bau_compare else "unreached" if args.unreached_compare else "cell"
    path = args.workdir / {"bau": "bau_cells.jsonl", "unreached": "unreached_cells.jsonl"}.get(mode, "cells.jsonl")
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    seen = {(c["preset"], c["size"], c["share"], c["seed"]) for c in done}
    todo = [(mode, args.workdir, p, n, s, seed, args.eval_accounts)
            for p, n, s, seed in product(args.presets, args.sizes, args.shares, args.seeds)
            if (p, n, s, seed) not in seen and not args.report_only]
    done += run_cells(path, _run, [(cell_args,) for cell_args in todo], args.jobs,
                      lambda result: {k: v for k, v in result.items() if k not in ("safe", "log", "evidence")})
    cells = pd.DataFrame(done)
    wanted = cells["preset"].isin(args.presets) & cells["size"].isin(args.sizes) & cells["share"].isin(args.shares)
    cells = cells[wanted]
    if mode == "unreached":
        out = unreached_table(cells)
        print(out.to_markdown(index=False))
        (args.workdir / "unreached_table.md").write_text(out.to_markdown(index=False) + "\n")
        return
    if args.bau_compare:
        out = bau_table(cells)
        print(out.to_markdown(index=False))
        (args.workdir / "bau_table.md").write_text(out.to_markdown(index=False) + "\n")
        return
    out = table(cells)
    print(out.to_markdown(index=False))
    (args.workdir / "table.md").write_text(out.to_markdown(index=False) + "\n")
    plot(cells, args.workdir / "value_by_size.png")


if __name__ == "__main__":
    main()
