"""Training: examples from many as-of dates, the calibrated cure model, the response arms, one bundle.

Steps (each a function; `cureflow train` calls `run`, the DVC stages call `build_examples`, `run` and
`register_dir` one at a time):
1. `build_examples` (the DVC `features` stage): `cure_examples`, every overdue account every
   `example_every_days` days, features at t, label = cure within H days, only as-of dates whose label window
   is fully observed; and the logged randomised decisions with their features and 7-day label.
2. `time_split`: the latest `holdout_fraction` of as-of dates form the holdout; training keeps only dates
   whose label window ends before the holdout starts (no leakage through overlapping windows).
3. Fit `CalibratedLGBM`, evaluate on the holdout, compare with the simulator's truth when it is there.
4. `fit_response`: the channel x window x offer response model from the logged experiments.
5. `save_outputs`: bundle, metrics, plots and the HTML model report (`pipelines/report.py`).
6. `log_and_register`: log everything to MLflow and register the pyfunc. A version that passes the quality
   gate becomes `@challenger`, or `@champion` when the registry has no champion yet; `cureflow promote`
   compares a challenger with the champion on the same holdout before `@champion` moves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from models import logging_policy, policy, safe, vocab
from models.baseline import Baseline
from models.bundle import ScoringBundle
from models.config import load_params
from models.contract import Portfolio, read_dir
from models.estimators import CalibratedLGBM, cure_estimator
from models.features import CATEGORICAL, FeatureConfig, Prepared, feature_names, features_at, prepare
from models.files import write_csv_atomic, write_joblib_atomic, write_json_atomic, write_parquet_atomic
from models.labels import cure_labels, history_end
from models.logging_policy import BAUConfig
from models.metrics import (
    DPD_BANDS,
    FRESH_DAYS_PAST_DUE,
    band_key,
    band_metrics,
    band_report,
    classification_report,
    gains_table,
)
from models.playbook import Playbook
from models.progress import step
from models.queue import day_queue
from models.registry import artifact_root, configure_mlflow, registry_client, resolve_version
from models.response import ARM_OFFERS, ActionSpace, ResponseModel
from pipelines import feedback
from pipelines.logs import RULE_INPUTS, decision_examples

EXAMPLE_FILES = {"cure": "cure_examples.parquet", "decisions": "decisions.parquet", "summary": "examples.json"}


@dataclass
class Examples:
    """The learning examples of one history: what the features stage writes and the train stage reads."""

    cure: pd.DataFrame             # as_of, account_id, features, label: every account overdue at each as-of date
    decisions: pd.DataFrame        # logged decisions (randomised; BAU too with response.business_as_usual.use)
    history_end: pd.Timestamp
    n_dates: int


@dataclass
class TrainResult:
    bundle: ScoringBundle
    metrics: dict[str, float]
    holdout: pd.DataFrame          # as_of, account_id, label, p
    gains: pd.DataFrame
    truth_gap: pd.DataFrame | None  # account_id, p, p_true at the end of history (simulated data only)
    history_end: pd.Timestamp
    bands: dict | None = None                      # holdout scores by band beside the baseline (band_report)
    portfolio: Portfolio | None = None             # the training data (for the report's evaluations)
    decisions_holdout: pd.DataFrame | None = None  # logged decisions held out from the response model
    data: Path | None = None


def resolve_history_end(data: Path, prep: Prepared, explicit: str | None = None) -> pd.Timestamp:
    """--history-end (converted to UTC), else the simulator's manifest `end`, else `labels.history_end` (the
    default as-of, `models.as_of.default_as_of`, of the latest payment, contact or instalment due date)."""
    if explicit:
        return pd.Timestamp(explicit).tz_convert("UTC")
    manifest = Path(data) / "manifest.json"
    if manifest.exists():
        end = json.loads(manifest.read_text()).get("end")
        if end:
            return pd.Timestamp(end).tz_convert("UTC")
    return history_end(prep)


def example_dates(prep: Prepared, end: pd.Timestamp, horizon: int, every: int, min_history_days: int = 180):
    """As-of dates every `every` days back from end - H, while at least `min_history_days` of history exist."""
    first = pd.Timestamp(int(prep.inst_due.min()), tz="UTC") + pd.Timedelta(days=min_history_days)
    last = end - pd.Timedelta(days=horizon)
    dates = []
    t = last
    while t >= first:
        dates.append(t)
        t -= pd.Timedelta(days=every)
    return sorted(dates)


def cure_examples(prep: Prepared, config: FeatureConfig, dates, horizon: int,
                  pconf: policy.PolicyConfig | None = None) -> pd.DataFrame:
    """Features and cure labels of every account overdue at each date (past the materiality thresholds
    of `pconf`, as in the work queue; stale accounts are kept: `fit` sets them apart)."""
    frames = []
    for t in dates:
        feats = features_at(prep, t, config)
        arrears = feats["arrears"].to_numpy()
        overdue = arrears > 0 if pconf is None else policy.material(
            arrears, feats["arrears_instalments"].to_numpy(), pconf)
        labels = cure_labels(prep, t, feats["arrears"].to_numpy(), horizon)
        frame = feats.loc[overdue].copy()
        frame.insert(0, "as_of", t)
        frame["label"] = labels[overdue]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def split_stale(examples: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curable, stale): stale debt (past policy.stale.recovery_days_past_due) is not a cure candidate, so
    the cure model neither learns from it nor is judged on it."""
    stale = policy.stale(examples["days_past_due"].to_numpy(), policy.PolicyConfig.from_params(params["policy"]))
    return examples[~stale].reset_index(drop=True), examples[stale].reset_index(drop=True)


def time_split(examples: pd.DataFrame, holdout_fraction: float, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on early as-of dates, test on the latest ones; a gap of H days keeps label windows apart."""
    dates = np.sort(examples["as_of"].unique())
    cut = dates[int(np.floor(len(dates) * (1 - holdout_fraction)))]
    holdout = examples[examples["as_of"] >= cut]
    train = examples[examples["as_of"] + pd.Timedelta(days=horizon) <= cut]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def response_split(examples: pd.DataFrame, holdout_fraction: float, horizon_days: int):
    """Earlier decision days train the response model; the latest days are held out for evaluation,
    with a gap of K days so no training label window overlaps the held-out decisions."""
    if examples.empty:
        return examples, examples, pd.Timestamp.max.tz_localize("UTC")
    days = np.sort(examples["decided_at"].unique())
    cut = days[int(np.floor(len(days) * (1 - holdout_fraction)))]
    train = examples[examples["contacted_at"] + pd.Timedelta(days=horizon_days) <= cut]
    return train.reset_index(drop=True), examples[examples["decided_at"] >= cut].reset_index(drop=True), cut


def fit_response(examples: pd.DataFrame, names: list[str], params: dict, space: ActionSpace) -> ResponseModel:
    """The response model on logged decisions (features at decision time, action, propensity, label)."""
    if examples.empty:
        raise ValueError("the contact history holds no randomised decision (none has a propensity)")
    model = ResponseModel(params["response"]["lgbm"], space, CATEGORICAL, int(params["seed"]))
    return model.fit(examples[names], examples["action"].to_numpy(), examples["label"].to_numpy(),
                     examples["propensity"].to_numpy(dtype=np.float64), examples["reached"].to_numpy())


def truth_gap(data: Path, bundle: ScoringBundle, portfolio: Portfolio, end: pd.Timestamp) -> pd.DataFrame | None:
    """On simulated data: the model's cure chance at the end of history beside the simulator's truth."""
    truth_file = Path(data) / "truth" / "cure.parquet"
    if not truth_file.exists():
        return None
    truth = pd.read_parquet(truth_file)
    feats = bundle.features(portfolio, end)
    feats = feats[feats["arrears"] > 0]
    p = bundle.cure.predict_proba(feats[bundle.feature_names].to_numpy(dtype=np.float64))[:, 1]
    ours = pd.DataFrame({"account_id": feats["account_id"].to_numpy(), "p": p})
    return ours.merge(truth[["account_id", "p_cure_30"]].rename(columns={"p_cure_30": "p_true"}), on="account_id")


def build_examples(portfolio: Portfolio, data: Path, params: dict, history_end_at: str | None = None,
                   log=print) -> Examples:
    """The cure examples (every overdue account every `example_every_days` days, at most `max_examples`)
    and the logged decisions with their features: everything training learns from."""
    cure_p = params["cure"]
    horizon = int(cure_p["horizon_days"])
    config = FeatureConfig.from_params(params)
    started = time.perf_counter()
    prep = prepare(portfolio, config)
    end = resolve_history_end(data, prep, history_end_at)
    dates = example_dates(prep, end, horizon, int(cure_p["example_every_days"]),
                          int(cure_p["min_history_days"]))  # 0 for six months of real data (uci.train)
    examples = cure_examples(prep, config, dates, horizon, policy.PolicyConfig.from_params(params["policy"]))
    if len(examples) > int(cure_p["max_examples"]):
        examples = examples.sample(int(cure_p["max_examples"]), random_state=params["seed"]).sort_index()
    decisions = decision_examples(portfolio, prep, config, params, end, BAUConfig.from_params(params).use)
    log(f"examples: {len(examples):,} from {len(dates)} as-of dates and {len(decisions):,} logged decisions "
        f"in {time.perf_counter() - started:.1f}s")
    return Examples(examples.reset_index(drop=True), decisions, end, len(dates))


def save_examples(examples: Examples, out_dir: Path) -> dict[str, Path]:
    """Write the examples as parquet with a small JSON summary (the DVC features stage's outputs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in EXAMPLE_FILES.items()}
    write_parquet_atomic(examples.cure, files["cure"])
    write_parquet_atomic(examples.decisions, files["decisions"])
    summary = {"history_end": examples.history_end.isoformat(), "as_of_dates": examples.n_dates,
               "cure_examples": len(examples.cure), "cure_base_rate": float(examples.cure["label"].mean()),
               "logged_decisions": len(examples.decisions)}
    write_json_atomic(summary, files["summary"], newline=True, indent=2)
    return files


def load_examples(directory: Path) -> Examples:
    """Read what `save_examples` wrote; a missing file is a clear error naming it."""
    files = {key: Path(directory) / name for key, name in EXAMPLE_FILES.items()}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise FileNotFoundError(f"training examples not found: {', '.join(missing)} (run `cureflow features`)")
    summary = json.loads(files["summary"].read_text())
    return Examples(pd.read_parquet(files["cure"]), pd.read_parquet(files["decisions"]),
                    pd.Timestamp(summary["history_end"]).tz_convert("UTC"), int(summary["as_of_dates"]))


def fit_cure(train: pd.DataFrame, holdout: pd.DataFrame, names: list[str], params: dict,
             log=print) -> tuple[CalibratedLGBM, np.ndarray, dict[str, float]]:
    """The calibrated cure model, its holdout predictions and holdout metrics."""
    model = cure_estimator(params, CATEGORICAL)
    model.fit(train[names], train["label"].to_numpy(), groups=train["account_id"].to_numpy(),
              times=train["as_of"])
    p = model.predict_proba(holdout[names])[:, 1]
    metrics = classification_report(holdout["label"].to_numpy(), p)
    metrics.update({f"oof_{k}_roc_auc": v for k, v in model.oof_auc_.items() if v is not None})
    metrics["uses_booster"] = float(model.uses_booster_)
    log(f"cure model: {model.n_iterations_} trees, folds by {model.fold_kind_}, out-of-fold ROC AUC "
        + ", ".join(f"{k} {v:.3f}" for k, v in model.oof_auc_.items() if v is not None)
        + ("" if model.uses_booster_ else " (the booster does not beat the baseline's features: scored by them)")
        + f"; holdout ROC AUC {metrics['roc_auc']:.3f}, Brier {metrics['brier']:.4f}, ECE {metrics['ece']:.4f}")
    return model, p, metrics


def fit_response_model(decisions: pd.DataFrame, names: list[str], params: dict, config: FeatureConfig,
                       log=print) -> tuple[ResponseModel | None, pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """The response model on the earlier logged decisions; returns it (None without randomised decisions),
    the randomised decisions it learned from, the held-out randomised decisions and the cut-off between them.

    The split is made on the randomised decisions (a logged propensity). With params
    response.business_as_usual.use, the business-as-usual decisions before the cut-off whose estimated
    propensity passes the overlap and calibration checks (models.logging_policy) join them, weighted by
    1 / the estimated propensity; the model's `business_as_usual_` says how many were used and why the others
    were not. The held-out decisions, on which the safe policy's lower bounds rest, stay randomised only."""
    randomised = decisions["propensity"].notna().to_numpy() if len(decisions) else np.zeros(0, dtype=bool)
    resp_train, resp_holdout, resp_cut = response_split(
        decisions[randomised].reset_index(drop=True), float(params["response"]["holdout_fraction"]),
        int(params["response"]["horizon_days"]))
    space = ActionSpace(tuple(w.name for w in config.windows))
    learn, bau = resp_train, None
    conf = BAUConfig.from_params(params)
    if conf.use and len(resp_train):
        before = decisions[~randomised & (decisions["contacted_at"]
                                          + pd.Timedelta(days=int(params["response"]["horizon_days"])) <= resp_cut)]
        used, bau = business_as_usual(before, names, params, conf)
        learn = pd.concat([resp_train, used], ignore_index=True)
        log(_bau_line(bau))
    try:
        response = fit_response(learn, names, params, space)
        response.business_as_usual_ = bau
        log(f"response model: {len(resp_train):,} randomised decisions before {resp_cut.isoformat()[:10]}"
            + (f" and {bau['used']:,} business-as-usual ones" if bau else "") + f", {len(resp_holdout):,} held out")
    except ValueError as err:
        response = None
        log(f"no response model ({err}; {len(resp_train):,} logged decisions to learn from, {len(resp_holdout):,} "
            f"held out): the queue follows the baseline (the team's playbook, params policy.playbook) and its "
            f"experiments until enough randomised decisions are logged")
    return response, resp_train, resp_holdout, resp_cut


def business_as_usual(bau: pd.DataFrame, names: list[str], params: dict, conf: BAUConfig
                      ) -> tuple[pd.DataFrame, dict]:
    """The business-as-usual decisions that pass overlap, each with its estimated propensity (out of fold,
    models.logging_policy), and the summary (decisions, used, dropped by reason, calibration errors). The
    rule is estimated from the decision-time features, the account's flags and the decision day."""
    if bau.empty or not set(RULE_INPUTS) <= set(bau.columns):
        return bau.iloc[:0], {"decisions": len(bau), "used": 0, "dropped": {}}
    day = (bau["decided_at"] - bau["decided_at"].min()).dt.days.to_numpy(dtype=np.float64)
    X = bau[names + list(RULE_INPUTS)].assign(decided_day=day)
    est, summary = logging_policy.estimate(X, bau[["channel", "window", "offer"]], bau["account_id"].to_numpy(),
                                           conf, int(params["seed"]), CATEGORICAL)
    used = bau[est["used"].to_numpy()].assign(propensity=est.loc[est["used"], "propensity"].to_numpy())
    return used.reset_index(drop=True), summary


def _bau_line(summary: dict) -> str:
    """The training log's account of the business-as-usual decisions: used, dropped and why."""
    dropped = "; ".join(f"{n:,} {why}" for why, n in summary.get("dropped", {}).items()) or "none dropped"
    errors = ", ".join(f"{k} {v:.3f}" for k, v in summary.get("calibration_error", {}).items())
    return (f"business as usual: {summary['used']:,} of {summary['decisions']:,} decisions used "
            f"(estimated propensity in [{summary.get('min_propensity', 0):g}, {summary.get('max_propensity', 1):g}]); "
            f"{dropped}" + (f"; out-of-fold calibration error {errors}" if errors else ""))


def _logged_values(response: ResponseModel, logs: pd.DataFrame, names: list[str], params: dict,
                   portfolio: Portfolio) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For logged decisions: (n, actions + 1) the model's money of each action against no contact (-inf
    where the consent and legal flags forbade it; no contact last, 0), the doubly robust scores, and the
    allowed mask."""
    from pipelines.evaluate import action_costs, logged_money

    costs = params["policy"]["costs"]
    q, value, allowed = logged_money(response, names, costs, portfolio, logs)
    stake = logs["arrears"].to_numpy(dtype=np.float64)
    taken = logs["action"].to_numpy()
    reward = logs["label"].to_numpy(dtype=float) * stake - action_costs(costs, response.space)[taken] - q[:, -1] * stake
    scores = safe.dr_matrix(value, taken, logs["propensity"].to_numpy(dtype=float), reward)
    return np.where(allowed, value, -np.inf), scores, allowed


def fit_safe_policy(response: ResponseModel | None, resp_train: pd.DataFrame, resp_holdout: pd.DataFrame,
                    names: list[str], params: dict, portfolio: Portfolio, log=print) -> safe.SafePolicy:
    """The baseline and the departure margin (models.safe).

    The baseline is the team's playbook (params policy.playbook, models.playbook); with `policy.baseline:
    auto` the best single action (by its doubly robust value on every randomised decision) replaces it
    where its one-sided lower confidence bound over the playbook is above zero; `{channel, window, offer}`
    names one fixed action instead. The margin is chosen on the held-out randomised decisions. Without a
    response model the policy is its baseline: on day one, the playbook."""
    conf = params["policy"].get("safe", {})
    z = float(conf.get("z", 1.645))
    windows = tuple(w.name for w in FeatureConfig.from_params(params).windows)
    space = ActionSpace(windows)
    chosen = params["policy"].get("baseline", "auto")
    book = None if isinstance(chosen, dict) else Playbook.from_params(params["policy"].get("playbook"), windows)
    evidence: dict = {"randomised_train": len(resp_train), "randomised_holdout": len(resp_holdout)}
    base = safe.SafePolicy(_fixed_baseline(chosen, space, windows), playbook=book)
    evidence.update(_baseline_words(base, space, "params policy.playbook (the team's playbook)" if book else
                                    "params policy.baseline (the team's rule)" if isinstance(chosen, dict) else
                                    "no baseline configured"))
    if response is None:
        log(f"safe policy: no response model; the policy is its baseline ({evidence['baseline_text']})")
        return dataclasses.replace(base, evidence=evidence)
    logs = pd.concat([resp_train, resp_holdout], ignore_index=True)
    value, scores, allowed = _logged_values(response, logs, names, params, portfolio)
    if chosen == "auto":
        base = _learned_baseline(base, value, scores, allowed, logs, space, z, evidence)
    held = slice(len(logs) - len(resp_holdout), None)  # the held-out decisions are the last rows of `logs`
    margin, trials = math.inf, []
    if len(resp_holdout):
        prefs = _prefs(base, logs.iloc[held], windows)
        margin, trials = safe.select_margin(scores[held], value[held, :-1], policy.greedy(value[held, :-1]),
                                            base.baseline, z, int(conf.get("min_departures", 30)), base.fallback,
                                            prefs)
    evidence.update(trials=trials, margin=margin)
    best = max(trials, key=lambda t: t["lcb"], default=None)
    log(f"safe policy: baseline {evidence['baseline_text']}; "
        + (f"departs where the models expect > JPY {margin:,.0f} more (held-out DR improvement "
           f"{best['improvement']:,.0f} per decision, lower bound {best['lcb']:,.0f}, {best['departures']:,} of "
           f"{len(resp_holdout):,} held-out decisions)" if math.isfinite(margin) else
           f"no departure yet: no margin's lower bound is above zero on {len(resp_holdout):,} held-out decisions"))
    return dataclasses.replace(base, margin=margin, evidence=evidence)


def _fixed_baseline(chosen, space: ActionSpace, windows: tuple[str, ...]) -> int:
    """params policy.baseline as a flat action when it names one ({channel, window, offer}), else none."""
    if not isinstance(chosen, dict):
        if chosen not in ("auto", "playbook"):
            raise ValueError(f"params policy.baseline must be auto, playbook or {{channel, window, offer}}, "
                             f"not {chosen!r}")
        return safe.NO_CONTACT
    key = (chosen.get("channel"), chosen.get("window"), chosen.get("offer"))
    if key not in space.actions:
        raise ValueError(f"params policy.baseline {chosen} is not an action of the space "
                         f"(channels {list(vocab.CONTACT_CHANNELS)}, windows {list(windows)}, "
                         f"offers {list(ARM_OFFERS)})")
    return space.actions.index(key)


def _prefs(base: safe.SafePolicy, logs: pd.DataFrame, windows: tuple[str, ...]) -> np.ndarray:
    """The baseline's actions in order of preference for logged decisions (their days past due, arrears)."""
    return base.preferences(logs["days_past_due"].to_numpy(dtype=float),
                            logs["arrears_instalments"].to_numpy(dtype=float), windows)


def _learned_baseline(base: safe.SafePolicy, value: np.ndarray, scores: np.ndarray, allowed: np.ndarray,
                      logs: pd.DataFrame, space: ActionSpace, z: float, evidence: dict) -> safe.SafePolicy:
    """The best single action for everyone, where it beats the configured baseline (the playbook) with a
    positive lower confidence bound on the randomised decisions; else the configured baseline."""
    single, means = safe.best_single(scores, allowed, safe.action_design(space.actions[:-1]))
    fallback = safe.fallback_of(single, means, np.array([c for c, _, _ in space.actions[:-1]]))
    learned = safe.SafePolicy(single, fallback=fallback)
    evidence["best_single_text"] = _action_text(space, single)
    evidence["best_single_value"] = float(means[single]) if single >= 0 else 0.0
    windows = space.windows
    if base.playbook is not None or base.baseline >= 0:
        current = base.base(value[:, :-1], _prefs(base, logs, windows))
        test = safe.lower_bound(scores, learned.base(value[:, :-1]), current, z)
        evidence["best_single_vs_configured"] = test
        if test["lcb"] <= 0:
            return base
    evidence.update(_baseline_words(learned, space, f"best single action by doubly robust value on {len(logs):,} "
                                                    f"randomised decisions, smoothed over channel, window and offer"))
    evidence["baseline_value"] = evidence["best_single_value"]
    return learned


def _baseline_words(base: safe.SafePolicy, space: ActionSpace, source: str) -> dict:
    """The evidence's plain words for a baseline: its source and its text (used in reasons)."""
    if base.playbook is not None:
        return {"baseline_source": source, "baseline_text": "the playbook",
                "playbook": [step.text() for step in base.playbook.steps]}
    text = _action_text(space, base.baseline)
    if base.fallback >= 0:
        text += f" (else {_action_text(space, base.fallback)})"
    return {"baseline_source": source, "baseline_text": text}


def _action_text(space: ActionSpace, index: int) -> str:
    if index < 0:
        return "no contact"
    channel, window, offer = space.actions[index]
    offer = offer.replace("_", " ")
    return f"{channel} on {window.replace('_', ' ')}s with {'an' if offer[0] in 'aeiou' else 'a'} {offer}"


def fit(data: Path, params: dict | None = None, history_end_at: str | None = None,
        log=print, examples: Examples | None = None, decision_log: str | None = None) -> TrainResult:
    """Everything but MLflow: examples (built here unless given), split, cure model, holdout metrics,
    response model, bundle, and the reference profile `cureflow monitor` compares later batches with."""
    params = params or load_params()
    cure_p = params["cure"]
    horizon = int(cure_p["horizon_days"])
    config = FeatureConfig.from_params(params)
    portfolio, fed = feedback.load(read_dir(data), decision_log, config)
    if fed:
        log("decision log: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in fed.items()))
    if examples is None:
        with step("features: building training examples from the history"):
            examples = build_examples(portfolio, data, params, history_end_at, log=log)
    end = examples.history_end
    train, holdout = time_split(examples.cure, float(cure_p["holdout_fraction"]), horizon)
    train, stale_train = split_stale(train, params)
    holdout, stale_holdout = split_stale(holdout, params)
    log(f"cure examples: {len(train):,} train, {len(holdout):,} holdout; stale debt set apart: "
        f"{len(stale_train):,} train, {len(stale_holdout):,} holdout")
    names = feature_names(config)
    with step(f"cure model: {len(train):,} examples, {int(params['cure'].get('n_folds', 5))} folds"):
        model, p, metrics = fit_cure(train, holdout, names, params, log=log)
        baseline = Baseline(int(params["seed"])).fit(train, train["label"].to_numpy())
    hold = holdout[["as_of", "account_id", "label", "days_past_due", "arrears_instalments"]].assign(
        p=p, p_baseline=baseline.predict(holdout))
    bands = band_report(hold)
    metrics.update(band_metrics(bands))
    log(_band_line(bands["fresh"]))
    stale_rate = float(stale_train["label"].mean()) if len(stale_train) else 0.0
    metrics.update({"stale_n": float(len(stale_holdout)), "stale_cure_rate_train": stale_rate})
    if len(stale_holdout):
        metrics["stale_cure_rate"] = float(stale_holdout["label"].mean())
    with step(f"response model and safe policy: {len(examples.decisions):,} logged decisions"):
        response, resp_train, resp_holdout, resp_cut = fit_response_model(examples.decisions, names, params,
                                                                          config, log=log)
        safe_policy = fit_safe_policy(response, resp_train, resp_holdout, names, params, portfolio, log=log)
    bundle = ScoringBundle(params=params, feature_names=names, cure=model, response=response, safe=safe_policy,
                           baseline=baseline,
                           metadata={"history_end": end.isoformat(), "data": str(data),
                                     "data_fingerprint": portfolio.fingerprint(),
                                     "tables": {name: {"rows": len(portfolio.tables[name]), "sha256": digest}
                                                for name, digest in portfolio.table_fingerprints().items()},
                                     "response_holdout_from": resp_cut.isoformat(),
                                     "cure_holdout_from": holdout["as_of"].min().isoformat(),
                                     "stale_cure_rate": stale_rate, "usual_values": usual_values(train, names),
                                     "feedback": fed})
    bundle.metadata["reference"] = training_reference(bundle, portfolio, train, p, end)
    gap = truth_gap(data, bundle, portfolio, end)
    if gap is not None and len(gap):
        metrics["truth_mae"] = float(np.mean(np.abs(gap["p"] - gap["p_true"])))
        metrics["truth_n"] = float(len(gap))
        log(f"gap to the simulator's true cure chance: mean |p - p_true| = {metrics['truth_mae']:.4f} "
            f"over {len(gap):,} accounts overdue at the end")
    return TrainResult(bundle, metrics, hold, gains_table(hold["label"], hold["p"]), gap, end, bands=bands,
                       portfolio=portfolio, decisions_holdout=resp_holdout, data=Path(data))


def usual_values(train: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """The median of each numeric feature over the training examples: what a reason calls 'the usual'."""
    medians = train[[n for n in names if n not in CATEGORICAL]].median(skipna=True)
    return {name: float(v) for name, v in medians.items() if np.isfinite(v)}


def _band_line(fresh: dict) -> str:
    """The fresh-arrears figures in one log line."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    return (f"fresh arrears (1-90 days past due, {fresh['n']:,} holdout cases): ROC AUC {fmt(fresh['roc_auc'])}, "
            f"baseline {fmt(fresh['baseline_roc_auc'])}, lift {fmt(fresh['auc_lift'])}, ECE {fmt(fresh['ece'])}")


def training_reference(bundle: ScoringBundle, portfolio: Portfolio, train: pd.DataFrame, p_holdout: np.ndarray,
                       end: pd.Timestamp) -> dict:
    """What `cureflow monitor` compares a later batch with: the training examples' features, the holdout's
    cure chances, the action mix of the batch the model makes at the end of its history, and the profile
    of the accounts overdue on each of the last `monitor.reference_days` days (keyed by local day of month)."""
    from pipelines.monitor import day_profile, reference_profile

    rows, _ = day_queue(bundle, portfolio, end)
    reference = reference_profile(train[bundle.feature_names], p_holdout, rows, bundle.params)
    config, zone = bundle.feature_config, bundle.params["calendar"]["default_timezone"]
    prep = prepare(portfolio, config)
    for k in range(int(bundle.params["monitor"]["reference_days"]), 0, -1):
        t = end - pd.Timedelta(days=k)
        feats = features_at(prep, t, config)
        feats = feats[feats["arrears"] > 0]
        scores = bundle.cure.predict_proba(feats[bundle.feature_names])[:, 1] if len(feats) else np.array([])
        local = t.tz_convert(zone)
        reference["days"][str(local.day)] = {"date": local.isoformat(), **day_profile(reference, feats, scores)}
    return reference


def git_commit() -> str:
    """The commit of the working tree, or 'unknown' outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


OUTPUT_FILES = {"bundle": "bundle.joblib", "metrics": "metrics.json", "gains": "gains.csv",
                "holdout": "holdout.parquet", "calibration": "calibration.png", "roc": "roc.png",
                "gains_plot": "gains.png", "importance": "importance.png", "report": "report.html",
                "bands": "bands.json", "band_calibration": "band_calibration.png"}


def save_outputs(result: TrainResult, out_dir: Path) -> dict[str, Path]:
    """Write the bundle, metrics, holdout predictions, plots and the model report under out_dir (the DVC
    outputs of the train stage)."""
    from pipelines import plots, report

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in OUTPUT_FILES.items()}
    write_joblib_atomic(result.bundle, files["bundle"])
    write_json_atomic(result.metrics, files["metrics"], indent=2, sort_keys=True)
    write_csv_atomic(result.gains, files["gains"])
    write_parquet_atomic(result.holdout, files["holdout"])
    y, p = result.holdout["label"].to_numpy(), result.holdout["p"].to_numpy()
    plots.calibration_plot(y, p, files["calibration"])
    plots.roc_plot(y, p, files["roc"])
    plots.gains_plot(result.gains, files["gains_plot"])
    gain = result.bundle.cure.booster_.feature_importance(importance_type="gain")
    plots.importance_plot(result.bundle.feature_names, gain, files["importance"])
    if result.bands is not None:
        write_json_atomic(result.bands, files["bands"], indent=2)
        plots.band_calibration_plot(result.holdout, DPD_BANDS, files["band_calibration"])
    report.write_report(result, files, files["report"])
    return files


def _log_run(result: TrainResult, files: dict[str, Path], params: dict):
    """Inside an active run: params (the bundle's own), holdout metrics, tags and every file but the bundle
    (the model report under `report/`, the rest under `evaluation/`)."""
    import mlflow

    mlflow.log_params(_flat_params(result.bundle.params))
    mlflow.log_metrics({f"holdout_{k}": v for k, v in result.metrics.items()})
    mlflow.set_tags({"git_commit": git_commit(), "data_fingerprint": result.bundle.metadata["data_fingerprint"],
                     "history_end": result.history_end.isoformat()})
    for key, path in files.items():
        if key != "bundle" and Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path="report" if key == "report" else "evaluation")
    _log_datasets(result.bundle.metadata)


def _log_datasets(meta: dict) -> None:
    """The four contract tables the bundle learned from, as MLflow datasets (context `training`): their
    location, row count and sha256 fingerprint (the data stays where it is; only its identity is logged)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for name, info in meta.get("tables", {}).items():
        with warnings.catch_warnings():  # a local path matches two equivalent local sources; either will do
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str((Path(meta.get("data", "")) / name).resolve()))
        mlflow.log_input(MetaDataset(source, name=name, digest=info["sha256"][:32]), context="training",
                         tags={"rows": str(info["rows"]), "sha256": info["sha256"]})


def run_name_of(result: TrainResult) -> str:
    """What ran, for the MLflow runs list: `train 2026-11-01 20,000 accounts`."""
    meta = result.bundle.metadata
    accounts = meta.get("tables", {}).get("accounts", {}).get("rows")
    zone = result.bundle.params.get("calendar", {}).get("default_timezone", "UTC")
    day = pd.Timestamp(meta["history_end"]).tz_convert(zone).date().isoformat()
    return f"train {day}" + (f" {accounts:,} accounts" if accounts is not None else "")


def _experiment(params: dict) -> str:
    """Point MLflow at the tracking store and the experiment (created with its artifacts beside a SQLite
    store, and tagged as model development so MLflow 3's UI opens on the training runs, not on GenAI
    traces); returns the tracking URI."""
    import mlflow

    uri = configure_mlflow()
    name = params["mlflow"]["experiment"]
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root(uri))
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get("mlflow.experimentKind") != "custom_model_development":
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind",
                                                 "custom_model_development")
    return uri


def log_run(result: TrainResult, files: dict[str, Path], params: dict, run_name: str | None = None) -> str:
    """One MLflow run with everything but the model (a notebook's experiment, to compare with others);
    returns its run id. `log_and_register` is the same run plus the registered model."""
    import mlflow

    _experiment(params)
    with mlflow.start_run(run_name=run_name or run_name_of(result)) as run:
        _log_run(result, files, params)
    return run.info.run_id


def log_and_register(result: TrainResult, files: dict[str, Path], params: dict, log=print) -> dict:
    """One MLflow run: params, metrics, plots, report, fingerprint, commit; the pyfunc registered. Past the
    quality gate the version becomes `@challenger`, or `@champion` when there is no champion yet."""
    import mlflow
    from mlflow.models import infer_signature

    from models.pyfunc import CureflowModel
    from models.scoring import example_request

    uri = _experiment(params)
    model_name = params["mlflow"]["model_name"]
    with mlflow.start_run(run_name=run_name_of(result)) as run:
        _log_run(result, files, params)
        result.bundle.run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            bundle_path = Path(tmp) / "bundle.joblib"
            joblib.dump(result.bundle, bundle_path)
            example = pd.DataFrame({"request": [json.dumps(example_request(result.bundle))]})
            signature = infer_signature(example, pd.DataFrame({"answer": ["{}"]}))
            info = mlflow.pyfunc.log_model(name="model", python_model=CureflowModel(),
                                           artifacts={"bundle": str(bundle_path)}, signature=signature,
                                           input_example=example, registered_model_name=model_name,
                                           code_paths=[str(Path(__file__).resolve().parent.parent / "models")])
    version = str(info.registered_model_version)
    aliases = set_aliases(registry_client(), model_name, version,
                          quality_gate(result.metrics, params["train"]["quality_gate"]))
    log(f"MLflow run {run.info.run_id}: registered {model_name} version {version}; {aliases['message']}")
    return {"run_id": run.info.run_id, "version": version, "champion": "champion" in aliases["set"],
            "challenger": "challenger" in aliases["set"], "tracking_uri": uri}


def set_aliases(client, model_name: str, version: str, gate: tuple[bool, str]) -> dict:
    """Tag the version with the quality gate's verdict; past the gate make it `@challenger`, or `@champion`
    when no champion exists (a fresh registry: the demo and the service need one)."""
    passed, why = gate
    client.set_model_version_tag(model_name, version, "quality_gate", "passed" if passed else f"failed: {why}")
    if not passed:
        return {"set": [], "message": f"NOT a challenger ({why})"}
    champion = resolve_version(client, f"models:/{model_name}@champion")
    if champion is None:
        client.set_registered_model_alias(model_name, "champion", version)
        client.set_model_version_tag(model_name, version, "promotion", "first champion: the registry had none")
        return {"set": ["champion"], "message": "alias @champion set (the registry had no champion)"}
    client.set_registered_model_alias(model_name, "challenger", version)
    return {"set": ["challenger"], "message": f"alias @challenger set; `cureflow promote` compares it with "
                                              f"@champion (version {champion})"}


def quality_gate(metrics: dict[str, float], gate: dict) -> tuple[bool, str]:
    """Judge the arrears a collector works, not the pooled holdout (telling fresh arrears from old ones is
    easy): on fresh arrears (1-90 days past due) ROC AUC >= min_roc_auc and a lift over the three-feature
    baseline above min_baseline_lift; ECE <= max_ece on fresh arrears and in each of its bands (1-30, 31-90)
    holding at least min_band_examples cases. Later bands are reported, not judged."""
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
        ece = metrics.get(f"{name}_ece")
        if metrics.get(f"{name}_n", 0) >= min_n and ece is not None and ece > float(gate["max_ece"]):
            problems.append(f"{name} ece {ece:.3f} > {gate['max_ece']} ({metrics[f'{name}_n']:,.0f} cases)")
    return (not problems, "; ".join(problems))


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def run(data: Path, out_dir: Path, params: dict | None = None, register: bool = True,
        history_end_at: str | None = None, log=print, examples_dir: Path | None = None,
        decision_log: str | None = None) -> dict:
    """The whole training stage: fit (from saved examples when `examples_dir` is given), write outputs,
    log to MLflow and register."""
    params = params or load_params()
    examples = load_examples(examples_dir) if examples_dir else None
    result = fit(data, params, history_end_at, log=log, examples=examples, decision_log=decision_log)
    with step("model report and plots"):
        files = save_outputs(result, Path(out_dir))
    info = {"metrics": result.metrics, "out_dir": str(out_dir)}
    if register:
        with step("MLflow: logging the run and registering the model"):
            info.update(log_and_register(result, files, params, log=log))
        result.bundle.model_version = f"{params['mlflow']['model_name']}/{info['version']}"
        write_joblib_atomic(result.bundle, files["bundle"])  # the bundle file, now stamped with run and version
    return info


def register_dir(train_dir: Path, evaluation: Path | None = None, params: dict | None = None,
                 log=print) -> dict:
    """The DVC register stage: log and register what the train stage wrote under `train_dir` (with
    `evaluation`, the JSON of `cureflow evaluate`, among the run's artifacts). The quality gate and the
    MLflow names come from the current params; the logged params are those the bundle was trained with."""
    train_dir = Path(train_dir)
    files = {key: train_dir / name for key, name in OUTPUT_FILES.items()}
    missing = [str(files[k]) for k in ("bundle", "metrics", "holdout", "gains") if not files[k].exists()]
    if missing:
        raise FileNotFoundError(f"training outputs not found: {', '.join(missing)} (run `cureflow train`)")
    if evaluation is not None:
        files["evaluation"] = Path(evaluation)
    bundle = joblib.load(files["bundle"])
    result = TrainResult(bundle, json.loads(files["metrics"].read_text()), pd.read_parquet(files["holdout"]),
                         pd.read_csv(files["gains"]), None, pd.Timestamp(bundle.metadata["history_end"]))
    return log_and_register(result, files, params or load_params(), log=log)
