"""Benchmark: a simulated team runs cureflow for 26 weeks from a first export with no experiment.

For each preset x seed, three teams work the same portfolio (the same accounts and the same history, a
first export whose contact log has no randomised decision), each in its own world from then on:

- **cureflow**: every week the batch scores the overdue accounts (`serving.batch.day_queue`: the policy,
  its experiments at params policy.explore and the day's call capacity), the simulator carries the
  decisions out and the customers respond (`pipelines.simulate.Live`), the outcomes come back in the
  contacts export with each decision's propensity, and the models are retrained (`pipelines.train.fit`);
  a retrained bundle replaces the current one only when it passes the quality gate.
- **playbook**: the day-one bundle (no response model: the team's playbook) with experiments off, forever.
- **uniform A/B**: every decision drawn uniformly among the actions the rules allow, and no contact.

Each week, before the decisions are carried out, every team's decisions are valued with the simulator's
exact truth (the JPY value per overdue account: payment uplift x arrears - the action's cost, against no
contact), beside the oracle's (each account's best allowed action) in cureflow's world. One JSON line per
(preset, seed, team, week) goes to `<workdir>/weeks.jsonl`; the table and plot are written at the end.

    .venv/bin/python benchmarks/closed_loop.py --presets lease digital mature drawn --seeds 1 2 \
        --accounts 10000 --weeks 26 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

PRESETS = ("lease", "digital", "mature", "drawn")
TEAMS = ("cureflow", "playbook", "uniform A/B")


def _portfolio(live):
    from models.contract import validate

    return validate(live.tables())


def _fit(live, params: dict, workdir: Path):
    from models.contract import write_dir
    from pipelines.train import fit

    data = workdir / "data"
    write_dir(_portfolio(live), data)
    return fit(data, params, history_end_at=live.as_of.isoformat(), log=lambda *_: None)


def _decisions(rows: pd.DataFrame, bundle, space) -> pd.DataFrame:
    """The batch rows as the actions the simulator carries out (window from each row's start)."""
    from pipelines.evaluate import chosen_actions

    action = chosen_actions(rows, bundle, space)
    acts = np.array(space.actions, dtype=object)[action]
    return pd.DataFrame({"account_id": rows["account_id"].to_numpy(), "channel": acts[:, 0], "window": acts[:, 1],
                         "offer": rows["offer"].to_numpy(), "propensity": rows["propensity"].to_numpy(float)})


def _uniform(tv, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame]:
    """Uniform A/B: per account an allowed action or no contact, each equally likely."""
    allowed = tv.allowed.copy()
    allowed[:, -1] = True
    k = allowed.sum(axis=1)
    pick = np.minimum((rng.random(len(k)) * k).astype(int), k - 1)
    action = (np.cumsum(allowed, axis=1) > pick[:, None]).argmax(axis=1)
    acts = np.array(tv.space.actions, dtype=object)[action]
    return action, pd.DataFrame({"account_id": tv.account_id, "channel": acts[:, 0], "window": acts[:, 1],
                                 "offer": acts[:, 2], "propensity": 1.0 / k})


def run_team(preset: str, seed: int, team: str, accounts: int, weeks: int, workdir: Path) -> list[dict]:
    """One team's 26 weeks in its own world; one record per week."""
    from models.config import load_params
    from models.response import ActionSpace
    from pipelines.evaluate import TrueValues
    from pipelines.simulate import Live, with_preset
    from pipelines.train import quality_gate
    from serving.batch import day_queue

    params = with_preset(load_params(), preset, experiment_share=0.0)   # a first export: no experiment
    live = Live(accounts, 12, seed, params)
    here = workdir / f"{preset}_{seed}_{team.replace(' ', '_').replace('/', '')}"
    bundle = _fit(live, params, here).bundle
    space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
    rng = np.random.default_rng(seed)
    out = []
    for week in range(weeks):
        started = time.perf_counter()
        portfolio, as_of = _portfolio(live), live.as_of
        promoted = None
        if team == "cureflow" and week > 0:
            result = _fit(live, params, here)
            promoted, why = quality_gate(result.metrics, params["train"]["quality_gate"])
            bundle = result.bundle if promoted else bundle
        tv = TrueValues.of(bundle, portfolio, live.truth(), as_of)
        if team == "uniform A/B":
            action, decisions = _uniform(tv, rng)
        else:
            rows, _ = day_queue(bundle, portfolio, as_of) if team == "cureflow" else (
                bundle.score(portfolio, as_of, explore=0.0), None)
            action = tv.chosen(rows, bundle)
            decisions = _decisions(rows, bundle, space)
        randomised = int((decisions["propensity"] < 1).sum())
        out.append({"preset": preset, "seed": seed, "team": team, "week": week, "as_of": as_of.isoformat(),
                    "overdue": len(tv.account_id), "value": tv.value_of(action), "oracle": tv.oracle(),
                    "response_model": bundle.response is not None, "promoted": promoted,
                    "departures_possible": bool(bundle.safe is not None and np.isfinite(bundle.safe.margin)),
                    "randomised": randomised, "seconds": round(time.perf_counter() - started, 1)})
        live.play(decisions)
    return out


def _run(args: tuple) -> list[dict]:
    preset, seed, team, accounts, weeks, workdir = args
    path = workdir / "weeks.jsonl"
    rows = run_team(preset, seed, team, accounts, weeks, workdir)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


def table(weeks: pd.DataFrame) -> pd.DataFrame:
    """Per preset and team at chosen weeks: mean value per overdue account over seeds, share of the oracle."""
    oracle = weeks[weeks["team"] == "cureflow"].groupby(["preset", "seed", "week"])["oracle"].first()
    w = weeks.join(oracle.rename("oracle_cf"), on=["preset", "seed", "week"])
    w["share"] = w["value"] / w["oracle_cf"]
    return (w.groupby(["preset", "team", "week"])[["value", "share"]].mean().unstack("team"))


def verdicts(weeks: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets per preset: never below the playbook after week 2, >= 0.8 of the oracle by the
    last week, ahead of uniform A/B at the last week (difference over seeds with a t-interval)."""
    from scipy import stats

    rows = []
    pivot = weeks.pivot_table(index=["preset", "seed", "week"], columns="team", values="value")
    oracle = weeks[weeks["team"] == "cureflow"].set_index(["preset", "seed", "week"])["oracle"]
    for preset, part in pivot.groupby(level="preset"):
        last = part.index.get_level_values("week").max()
        after = part[part.index.get_level_values("week") > 2]
        end = part[part.index.get_level_values("week") == last]
        diff = (end["cureflow"] - end["uniform A/B"]).to_numpy()
        half = (stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
        rows.append({"preset": preset, "weeks below the playbook after week 2":
                     int((after["cureflow"] < after["playbook"]).sum()),
                     "worst week vs playbook": float((after["cureflow"] - after["playbook"]).min()),
                     "share of oracle, last week": float((end["cureflow"] / oracle.loc[end.index]).mean()),
                     "vs uniform A/B, last week": f"{diff.mean():+,.0f} [{diff.mean() - half:+,.0f}, "
                                                  f"{diff.mean() + half:+,.0f}]"})
    return pd.DataFrame(rows)


def plot(weeks: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted(weeks["preset"].unique())
    fig, axes = plt.subplots(1, len(presets), figsize=(4.2 * len(presets), 3.6), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        part = weeks[weeks["preset"] == preset]
        for team in TEAMS:
            series = part[part["team"] == team].groupby("week")["value"].mean()
            ax.plot(series.index, series.to_numpy(), label=team)
        oracle = part[part["team"] == "cureflow"].groupby("week")["oracle"].mean()
        ax.plot(oracle.index, oracle.to_numpy(), "--", color="grey", label="oracle")
        ax.set(title=preset, xlabel="week", ylabel="JPY per overdue account (true)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=26)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_loop"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="only tabulate the finished weeks")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    done = set()
    path = args.workdir / "weeks.jsonl"
    if path.exists():
        done = {(r["preset"], r["seed"], r["team"]) for r in map(json.loads, path.read_text().splitlines())}
    todo = [(p, s, t, args.accounts, args.weeks, args.workdir) for p, s, t in product(args.presets, args.seeds, TEAMS)
            if (p, s, t) not in done and not args.report_only]
    with ProcessPoolExecutor(args.jobs) as pool:
        for rows in pool.map(_run, todo):
            print(f"{rows[0]['preset']} seed {rows[0]['seed']} {rows[0]['team']}: week {rows[-1]['week']} value "
                  f"{rows[-1]['value']:,.0f} (oracle {rows[-1]['oracle']:,.0f})", flush=True)
    weeks = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    pd.set_option("display.width", 200)
    shown = table(weeks)
    print(shown[shown.index.get_level_values("week").isin([0, 1, 2, 4, 8, 13, 20, 25])].round(3).to_string())
    print(verdicts(weeks).to_string(index=False))
    plot(weeks, Path("benchmarks/figures/closed_loop.png"))


if __name__ == "__main__":
    main()
