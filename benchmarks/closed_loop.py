"""Benchmark: a simulated team runs cureflow for 26 weeks from a first export with no experiment.

For each preset x seed, a team runs cureflow on a portfolio whose history is a first export (its contact log
has no randomised decision); every week its decisions are valued beside two teams that do not learn, on the
same accounts in the same state (a paired comparison: only cureflow's decisions are carried out):

- **cureflow**: every week the batch scores the overdue accounts (`models.queue.capacity_step`: the policy,
  its experiments at params policy.explore and the day's call capacity), the simulator carries the
  decisions out and the customers respond (`pipelines.simulate.Live`), the decisions are recorded in a
  decision log (SQLite) as the batch records them, the outcomes come back the way a CRM sends them (the
  contacts export names each contact's `decision_id` and carries no propensity), and the models are
  retrained reading that log (`pipelines.train.fit`, `pipelines.feedback`); a retrained bundle replaces the
  current one when it passes the quality gate, or when only its cure model fails the gate its policy on the
  current cure model (`pipelines.quality_gate.policy_update`, as `cureflow train` registers it), and then
  only when `cureflow promote`'s comparison with the serving bundle on the week's data says so.
- **playbook**: the day-one bundle (no response model: the team's playbook) with experiments off, within the
  same call capacity (a team of this size following its own rule also has only so many calls a day).
- **uniform A/B**: every decision drawn uniformly among the actions the rules allow, and no contact.

Each week, before cureflow's decisions are carried out, every team's decisions are valued with the
simulator's exact truth (the JPY value per overdue account: payment uplift x arrears - the action's cost,
against no contact), beside the oracle's (each account's best allowed action). One JSON line per (preset,
seed, team, week) goes to `<workdir>/weeks.jsonl`; the table and plot are written at the end.

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

    return validate(live.tables(crm_export=True))


def _fit(live, params: dict, workdir: Path, week: int = 0):
    from models.contract import write_dir
    from pipelines.train import fit

    data = workdir / "data"
    write_dir(_portfolio(live), data)
    with (workdir / "train.log").open("a") as f:  # each week's training log, for the counts behind the figures
        return fit(data, params, history_end_at=live.as_of.isoformat(),
                   log=lambda line, *_: f.write(f"week {week}: {line}\n"), decision_log=_log_url(workdir))


def _log_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'decisions.db'}"


def _retrain_counts(result) -> dict:
    """What the week's retrain learned from (whether or not it passed the gate): the logged decisions with a
    propensity the examples hold, those the response model trained on (and the hold-outs among them), those
    held out for the safe policy, whether it fitted a response model, the most held-out departures the log took
    under any margin tried (models.safe.observed) and the margin it found."""
    bundle, fed = result.bundle, result.bundle.metadata.get("feedback") or {}
    evidence = bundle.safe.evidence if bundle.safe is not None else {}
    return {"contacts_naming_a_decision": int(fed.get("contacts_naming_a_decision", 0)),
            "propensity_from_log": int(fed.get("propensity_from_log", 0)),
            "randomised_train": int(evidence.get("randomised_train", 0)),
            "holdouts_train": int(evidence.get("holdouts_train", 0)),
            "randomised_holdout": int(evidence.get("randomised_holdout", 0)),
            "retrain_response_model": bundle.response is not None,
            "observed_departures": max((t.get("observed", 0) for t in evidence.get("trials", [])), default=0),
            "retrain_margin": (float(bundle.safe.margin) if bundle.safe is not None and np.isfinite(bundle.safe.margin)
                               else None), **_by_segment(evidence)}


def _by_segment(evidence: dict) -> dict:
    """Whether the retrain's learned baseline has a ranking per lifestyle, and its test against the one ranking
    (improvement and se, in shares of the arrears; None where it was not tested)."""
    test = evidence.get("by_segment") or {}
    one = test.get("vs one ranking") or {}
    return {"per_lifestyle": bool(test.get("adopted", False)), "per_lifestyle_vs_one": one.get("improvement"),
            "per_lifestyle_se": one.get("se")}


def _record(rows: pd.DataFrame, bundle, week: int, workdir: Path) -> None:
    """The week's decisions into the decision log, as the nightly batch records them."""
    from models.answers import answer_from_row
    from models.decision_log import DecisionLog, DecisionRecord
    from models.rules import RULE_IDS

    version = bundle.policy_config.version
    records = [DecisionRecord.from_answer(
        answer_from_row(row), request_id=f"closed-loop-week-{week}", caller="closed-loop", run_id=None,
        policy_version=version, features={}, rules_evaluated=list(RULE_IDS), source="batch",
        idempotency_key=f"week-{week}/{row['account_id']}") for row in rows.to_dict("records")]
    log = DecisionLog(_log_url(workdir))
    try:
        log.append_once(records)
    finally:
        log.close()


def _decisions(rows: pd.DataFrame, bundle, space) -> pd.DataFrame:
    """The batch rows as the actions the simulator carries out (window from each row's start)."""
    from pipelines.evaluate import chosen_actions

    action = chosen_actions(rows, bundle, space)
    acts = np.array(space.actions, dtype=object)[action]
    return pd.DataFrame({"account_id": rows["account_id"].to_numpy(), "channel": acts[:, 0], "window": acts[:, 1],
                         "offer": rows["offer"].to_numpy(), "propensity": rows["propensity"].to_numpy(float),
                         "decision_id": rows["decision_id"].to_numpy(dtype=object)})


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


def _promote(candidate, serving, result, params: dict, here: Path) -> tuple[bool, str]:
    """`cureflow promote`'s decision on this week's data (pipelines.promote.evaluate_contenders): the candidate
    (a retrain past the quality gate, or its policy on the serving cure model) against the serving bundle, on
    the same cure holdout and the same held-out logged decisions (the policy each serves, the decisions'
    recorded blocks respected); the failed checks in words."""
    from pipelines.promote import Contender, evaluate_contenders

    lift = float(params["train"]["quality_gate"].get("min_baseline_lift", 0.0))
    ok, checks, _, _ = evaluate_contenders(
        Contender("challenger", "", "", candidate, {"quality_gate": "passed"}),
        Contender("champion", "", "", serving, {}), result.portfolio, here / "data", params["promote"], lift,
        result.blocked, result.support)
    return ok, "; ".join(c["text"] for c in checks if not c["ok"])


def _baseline_truth(result, tv, playbook_actions: np.ndarray) -> dict:
    """The week's retrain's learned-baseline test (its estimate, in shares of the arrears) beside the truth of
    the same comparison on this week's overdue accounts: the retrain's learned ranking (adopted or in trial)
    against the playbook, in shares of the arrears and in JPY, and the response model's mean predicted
    payment uplift of the ranking's actions beside their true uplift. Empty where the retrain tested none."""
    from models import safe as safe_mod

    bundle = result.bundle
    test = (bundle.safe.evidence.get("best_single_vs_configured") if bundle.safe is not None else None)
    if test is None or bundle.response is None:
        return {}
    ranking = bundle.safe.ranking or bundle.safe.contender
    if not ranking:
        return {}
    allowed = np.where(tv.allowed, 0.0, -np.inf)
    pick = safe_mod.SafePolicy(ranking=tuple(ranking)).base(allowed[:, :-1])
    col = np.where(pick >= 0, pick, tv.value.shape[1] - 1)
    rows = np.arange(len(col))
    arrears = np.maximum(np.asarray(tv.arrears, dtype=np.float64), 1e-9)
    q = bundle.response.predict_matrix(np.asarray(tv.X, dtype=np.float64))  # the same features as the serving one
    true_gain = tv.value[rows, col] - tv.value[rows, playbook_actions]
    return {"test_improvement": float(test["improvement"]), "test_se": float(test["se"]),
            "test_observed": int(test["observed"]), "test_pick": bundle.safe.evidence.get("best_single_text", ""),
            "true_improvement_share": float(np.mean(true_gain / arrears)),
            "true_improvement_jpy": float(np.mean(true_gain)),
            "pick_uplift_model": float(np.mean(q[rows, col] - q[:, -1])),
            "pick_uplift_true": float(np.mean(tv.P[rows, col] - tv.P[:, -1])),
            "playbook_uplift_model": float(np.mean(q[rows, playbook_actions] - q[:, -1])),
            "playbook_uplift_true": float(np.mean(tv.P[rows, playbook_actions] - tv.P[:, -1])),
            "no_contact_model": float(np.mean(q[:, -1])), "no_contact_true": float(np.mean(tv.P[:, -1]))}


def _best_single(tv) -> dict:
    """The best single action for everyone this week by the truth (no contact where the rules forbid it; no
    call capacity): issue 15's comparator, beside the playbook."""
    single = np.where(tv.allowed, tv.value, 0.0).mean(axis=0)
    best = int(single.argmax())
    return {"best_single": float(single[best]), "best_single_is": "/".join(tv.space.actions[best])}


def run_world(preset: str, seed: int, accounts: int, weeks: int, workdir: Path,
              policy_updates: bool = False) -> list[dict]:
    """cureflow's 26 weeks; every week the three teams' decisions are valued on the same accounts in the same
    state (the playbook and uniform A/B do not learn, so their value needs no world of their own); one record
    per team and week."""
    from models.config import load_params
    from models.queue import apply_capacity, capacity_step
    from models.response import ActionSpace
    from pipelines.evaluate import TrueValues
    from pipelines.quality_gate import policy_update, quality_gate
    from pipelines.simulate import Live, with_preset

    params = with_preset(load_params(), preset, experiment_share=0.0)   # a first export: no experiment
    if policy_updates:
        params["train"]["policy_updates"] = True
    live = Live(accounts, 12, seed, params)
    here = workdir / f"{preset}_{seed}"
    (here / "decisions.db").unlink(missing_ok=True)  # a world run again starts with an empty decision log
    (here / "train.log").unlink(missing_ok=True)
    (here / "progress.log").unlink(missing_ok=True)
    day_one = bundle = _fit(live, params, here).bundle
    space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
    rng = np.random.default_rng(seed)
    out = []
    for week in range(weeks):
        started = time.perf_counter()
        portfolio, as_of = _portfolio(live), live.as_of
        promoted, retrained, gate, policy_only, why, result = None, {}, "", False, "", None
        if week > 0:
            result = _fit(live, params, here, week)
            passed, gate = quality_gate(result.metrics, params["train"]["quality_gate"])
            retrained = _retrain_counts(result)
            update = None if passed or not params["train"].get("policy_updates") else policy_update(
                result.bundle, bundle)
            policy_only = update is not None
            candidate = result.bundle if passed else update
            promoted, why = _promote(candidate, bundle, result, params, here) if candidate is not None else (
                False, "")
            bundle = candidate if promoted else bundle
        tv = TrueValues.of(bundle, portfolio, live.truth(), as_of)
        config = bundle.policy_config  # the batch's queue (models.queue), with each decision's distribution
        rows, _, _ = capacity_step(bundle.score(portfolio, as_of), config.phone_capacity, config.calls_per_hour)
        book = day_one.policy_config
        playbook, _ = apply_capacity(day_one.score(portfolio, as_of, explore=0.0), book.phone_capacity,
                                     book.calls_per_hour)
        uniform, _ = _uniform(tv, rng)
        playbook_actions = tv.chosen(playbook, day_one)
        diagnosis = _baseline_truth(result, tv, playbook_actions) if result is not None else {}
        decisions = _decisions(rows, bundle, space)
        values = {"cureflow": tv.value_of(tv.chosen(rows, bundle)),
                  "playbook": tv.value_of(playbook_actions), "uniform A/B": tv.value_of(uniform)}
        common = {"preset": preset, "seed": seed, "week": week, "as_of": as_of.isoformat(),
                  "overdue": len(tv.account_id), "oracle": tv.oracle(), **_best_single(tv),
                  "response_model": bundle.response is not None,
                  "promoted": promoted, "gate": gate, "policy_update": policy_only, "promotion": why, **retrained,
                  "departures_possible": bool(bundle.safe is not None and np.isfinite(bundle.safe.margin)),
                  "seconds": round(time.perf_counter() - started, 1), **diagnosis}
        out += [{**common, "team": team, "value": value} for team, value in values.items()]
        with (here / "progress.log").open("a") as f:  # to follow a long run: one line a week
            f.write(f"week {week}: promoted {promoted} ({why or gate}); " + ", ".join(
                f"{team} {value:,.0f}" for team, value in values.items()) + f", oracle {common['oracle']:,.0f}\n")
        _record(rows, bundle, week, here)
        live.play(decisions)
    return out


def _run(args: tuple) -> list[dict]:
    preset, seed, accounts, weeks, workdir, policy_updates = args
    path = workdir / "weeks.jsonl"
    rows = run_world(preset, seed, accounts, weeks, workdir, policy_updates)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


def table(weeks: pd.DataFrame) -> pd.DataFrame:
    """Per preset and team at chosen weeks: mean value per overdue account over seeds, share of the oracle."""
    w = weeks.assign(share=weeks["value"] / weeks["oracle"])
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


COUNTS = ("promoted", "propensity_from_log", "randomised_train", "holdouts_train", "randomised_holdout",
          "retrain_response_model", "observed_departures", "retrain_margin", "response_model", "departures_possible")


def counts(weeks: pd.DataFrame) -> pd.DataFrame:
    """Per preset, seed and week: what each retrain learned from and whether it reached the decisions (the
    retrain's own response model and margin, then the serving bundle's after the gate)."""
    mine = weeks[weeks["team"] == "cureflow"]
    return mine.set_index(["preset", "seed", "week"])[[c for c in COUNTS if c in mine.columns]]


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
    parser.add_argument("--policy-updates", action="store_true",
                        help="params train.policy_updates on: ship a retrain's policy on the serving cure model")
    parser.add_argument("--report-only", action="store_true", help="only tabulate the finished weeks")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    done = set()
    path = args.workdir / "weeks.jsonl"
    if path.exists():
        done = {(r["preset"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}
    todo = [(p, s, args.accounts, args.weeks, args.workdir, args.policy_updates)
            for s, p in product(args.seeds, args.presets)
            if (p, s) not in done and not args.report_only]
    with ProcessPoolExecutor(args.jobs) as pool:
        for rows in pool.map(_run, todo):
            last = [r for r in rows if r["week"] == rows[-1]["week"]]
            print(f"{rows[0]['preset']} seed {rows[0]['seed']} week {rows[-1]['week']}: " + ", ".join(
                f"{r['team']} {r['value']:,.0f}" for r in last) + f" (oracle {last[0]['oracle']:,.0f})", flush=True)
    weeks = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    pd.set_option("display.width", 200)
    shown = table(weeks)
    print(shown[shown.index.get_level_values("week").isin([0, 1, 2, 4, 8, 13, 20, 25])].round(3).to_string())
    print(counts(weeks).to_string())
    print(verdicts(weeks).to_string(index=False))
    plot(weeks, Path("benchmarks/figures/closed_loop.png"))


if __name__ == "__main__":
    main()
