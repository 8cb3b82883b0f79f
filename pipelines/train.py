"""Training (the DVC `train` stage, `cureflow train`): the calibrated cure model, the response arms, one bundle.

Steps (each a function; `cureflow train` calls `run`):
1. the examples of `pipelines.features` (built here unless the features stage wrote them);
2. `time_split`: the latest `holdout_fraction` of as-of dates form the holdout; training keeps only dates
   whose label window ends before the holdout starts (no leakage through overlapping windows).
3. Fit `CalibratedLGBM`, evaluate on the holdout, compare with the simulator's truth when it is there.
4. `fit_response`: the channel x window x offer response model from the logged experiments.
5. `save_outputs`: bundle, metrics, plots and the HTML model report (`pipelines/model_report.py`).
6. with `register`, `pipelines.register.log_and_register`: log everything to MLflow and register the pyfunc.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from models import logging_policy, policy, safe, vocab
from models.baseline import Baseline
from models.bundle import ScoringBundle
from models.config import load_params
from models.contract import Portfolio, read_dir
from models.estimators import CalibratedLGBM, cure_estimator
from models.features import CATEGORICAL, FeatureConfig, feature_names, features_at, prepare
from models.files import write_csv_atomic, write_joblib_atomic, write_json_atomic, write_parquet_atomic
from models.logging_policy import BAUConfig
from models.metrics import (
    DPD_BANDS,
    band_metrics,
    band_report,
    classification_report,
    gains_table,
)
from models.playbook import Playbook
from models.progress import step
from models.queue import day_queue
from models.response import ARM_OFFERS, ActionSpace, ResponseModel
from pipelines import feedback, model_report, plots
from pipelines.evaluate import action_costs, logged_money
from pipelines.examples_from_logs import RULE_INPUTS
from pipelines.features import Examples, build_examples, load_examples
from pipelines.monitor import day_profile, reference_profile
from pipelines.register import log_and_register
from pipelines.trained import OUTPUT_FILES, TrainResult


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
    model = ResponseModel(params["response"]["lgbm"], space, CATEGORICAL, int(params["seed"]),
                          unreached=params["response"].get("unreached", "none"))
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
            + (f" and {bau['used']:,} business-as-usual ones" if bau else "") + f", {len(resp_holdout):,} held out; "
            f"the chance with no contact learned on {response.p0_from_}")
        log(_unreached_line(choose_unreached(response, resp_holdout, names, params)))
    except ValueError as err:
        response = None
        log(f"no response model ({err}; {len(resp_train):,} logged decisions to learn from, {len(resp_holdout):,} "
            f"held out): the queue follows the baseline (the team's playbook, params policy.playbook) and its "
            f"experiments until enough randomised decisions are logged")
    return response, resp_train, resp_holdout, resp_cut


def choose_unreached(response: ResponseModel, holdout: pd.DataFrame, names: list[str], params: dict) -> dict:
    """Test on the held-out randomised decisions whether an unreached attempt changes nothing (models.response:
    ResponseModel.choose_unreached); the response model keeps the structure the data support."""
    z = float(params["policy"].get("safe", {}).get("z", 1.645))
    if holdout.empty:
        return response.choose_unreached(np.zeros((0, len(names))), np.zeros(0, dtype=np.int64), np.zeros(0),
                                         np.zeros(0), z)
    return response.choose_unreached(holdout[names].to_numpy(dtype=np.float64), holdout["action"].to_numpy(),
                                     holdout["label"].to_numpy(), holdout["propensity"].to_numpy(dtype=np.float64), z)


def _unreached_line(evidence: dict) -> str:
    """The training log's account of the unreached-attempt test."""
    residual = ", ".join(f"{c} {v:+.3f}" for c, v in evidence.get("residual_by_channel", {}).items())
    if "why" in evidence:
        return (f"unreached attempts: {evidence['chosen']} ({evidence['why']})"
                + (f"; held-out observed - predicted assuming they change nothing: {residual}" if residual else ""))
    verdict = ("an unreached attempt works differently by channel" if evidence["chosen"] == "per_channel" else
               "an unreached attempt changes nothing (not rejected)")
    return (f"unreached attempts: {verdict}; held-out log loss {evidence['log_loss_pooled']:.4f} with one "
            f"unreached chance, {evidence['log_loss_per_channel']:.4f} by channel "
            f"(improvement {evidence['improvement']:+.4f}, "
            f"lower bound {evidence['lcb']:+.4f}, {evidence['decisions']:,} contacts); observed - predicted "
            f"with no effect: {residual}")


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


class LoggedValues(NamedTuple):
    """`_logged_values`: what the safe policy's tests read of the logged decisions."""

    value: np.ndarray      # (n, actions + 1) the model's money against no contact, -inf where forbidden
    scores: np.ndarray     # the doubly robust scores (safe.dr_matrix)
    allowed: np.ndarray    # what each decision allowed
    outcomes: np.ndarray   # the outcome-only scores (safe.ipw_matrix)
    residual: np.ndarray   # (n,) the outcome less the model's chance of it for the action taken


def _logged_values(response: ResponseModel, logs: pd.DataFrame, names: list[str], params: dict,
                   portfolio: Portfolio, blocked: pd.Series = feedback.NO_BLOCKS) -> LoggedValues:
    """For logged decisions: (n, actions + 1) the model's money of each action against no contact (-inf
    where the consent and legal flags forbade it, or the decision's own recorded rules blocked it: `blocked`,
    `pipelines.feedback.Joined`; no contact last, 0), the doubly robust scores, the allowed mask, the
    outcome-only scores (`safe.ipw_matrix`: what a candidate's side of a test is read on) and each decision's
    residual (paid or not, less the model's chance of payment with the action taken: a share of the arrears).

    Why the recorded blocks: a decision whose call the day's capacity held back could not have been a call,
    so neither the playbook nor a candidate is judged by a call there. Judged by it, the learned baseline
    (text reminders) beat the playbook by +0.110 of the arrears (se 0.055) in week 25 of the closed loop at
    20,000 accounts, by the calls' cost and the model's view of calls that were never made; with the blocks,
    -0.090 (se 0.061), as the truth said (0.80 of the playbook's value; docs/models.md)."""
    costs = params["policy"]["costs"]
    q, value, allowed = logged_money(response, names, costs, portfolio, logs, blocked)
    taken = logs["action"].to_numpy()
    stake = logs["arrears"].to_numpy(dtype=np.float64)
    reward = logs["label"].to_numpy(dtype=float) * stake - action_costs(costs, response.space)[taken] - q[:, -1] * stake
    propensity = logs["propensity"].to_numpy(dtype=float)
    scores = safe.dr_matrix(value, taken, propensity, reward)
    residual = logs["label"].to_numpy(dtype=float) - q[np.arange(len(logs)), taken]
    return LoggedValues(np.where(allowed, value, -np.inf), scores, allowed,
                        safe.ipw_matrix(value, taken, propensity, reward), residual)


def fit_safe_policy(response: ResponseModel | None, resp_train: pd.DataFrame, resp_holdout: pd.DataFrame,
                    names: list[str], params: dict, portfolio: Portfolio, log=print,
                    blocked: pd.Series = feedback.NO_BLOCKS, support: pd.Series = feedback.NO_SUPPORT
                    ) -> safe.SafePolicy:
    """The baseline and the departure margin (models.safe).

    The baseline is the team's playbook (params policy.playbook, models.playbook); with `policy.baseline:
    auto` the best single action (by its doubly robust value on every randomised decision, with the ranking
    of the others where the rules forbid it) replaces it where it is estimated to do better
    (`_learned_baseline`); `{channel, window, offer}` names one fixed action instead. The margin is chosen on
    the held-out randomised decisions. Without a response model the policy is its baseline: on day one, the
    playbook. `blocked`: what each carried-out decision's own rules blocked (`pipelines.feedback.Joined`), not
    an action either side of a test is judged by there (`_logged_values`). `support`: which actions each
    decision's policy gave a chance (`pipelines.feedback.Joined`); the learned baseline's test leaves out a
    decision where either side had none (`models.safe.honest_improvement`)."""
    conf = params["policy"].get("safe", {})
    z = float(conf.get("z", 1.645))
    windows = tuple(w.name for w in FeatureConfig.from_params(params).windows)
    space = ActionSpace(windows)
    chosen = params["policy"].get("baseline", "auto")
    book = None if isinstance(chosen, dict) else Playbook.from_params(params["policy"].get("playbook"), windows)
    evidence: dict = {"randomised_train": len(resp_train), "randomised_holdout": len(resp_holdout),
                      "holdouts_train": int((resp_train["channel"] == "none").sum()) if len(resp_train) else 0}
    base = safe.SafePolicy(_fixed_baseline(chosen, space, windows), playbook=book)
    evidence.update(_baseline_words(base, space, "params policy.playbook (the team's playbook)" if book else
                                    "params policy.baseline (the team's rule)" if isinstance(chosen, dict) else
                                    "no baseline configured"))
    if response is None:
        log(f"safe policy: no response model; the policy is its baseline ({evidence['baseline_text']})")
        return dataclasses.replace(base, evidence=evidence)
    logs = pd.concat([resp_train, resp_holdout], ignore_index=True)
    logged = _logged_values(response, logs, names, params, portfolio, blocked)
    value, scores, allowed, outcomes = logged.value, logged.scores, logged.allowed, logged.outcomes
    least = int(conf.get("min_departures", 30))
    if chosen == "auto":
        supported = feedback.supported_actions(support, logs["contact_id"], space.actions)
        base = _learned_baseline(base, value, scores, allowed, logs, space, float(conf.get("baseline_z", 0.0)),
                                 evidence, least, int(conf.get("baseline_folds", 2)), retire_z=z,
                                 supported=supported, segment_by=str(conf.get("segment_by") or ""),
                                 pooled=_pooled(logged, logs, space, conf.get("baseline_test", "channel")))
    held = slice(len(logs) - len(resp_holdout), None)  # the held-out decisions are the last rows of `logs`
    margin, trials = math.inf, []
    if len(resp_holdout):
        prefs = _prefs(base, logs.iloc[held], windows)
        margin, trials = safe.select_margin(scores[held], value[held, :-1], policy.greedy(value[held, :-1]),
                                            base, z, least, prefs, taken=logs["action"].to_numpy()[held],
                                            outcomes=outcomes[held],
                                            propensity=logs["propensity"].to_numpy(dtype=float)[held])
    evidence.update(trials=trials, margin=margin)
    best = next((t for t in trials if t["margin"] == margin), None)  # the margin chosen (enough observed)
    test = evidence.get("best_single_vs_configured")
    if test is not None:
        log(f"learned baseline: {evidence['best_single_text']} against the playbook, cross-fitted improvement "
            f"{test['improvement']:+.3f} (se {test['se']:.3f}) of the arrears per decision, {test['observed']} "
            f"decisions took it where the two differ ({test['effective']:.0f} by weight, at least {least}; "
            f"{test['unsupported']:,} left out where the log gave either side no chance): "
            + ("it replaces the playbook" if base.playbook is None else
               f"the playbook stays; the challenger is {evidence.get('challenger', 'in trial')}"))
    log(f"safe policy: baseline {evidence['baseline_text']}; "
        + (f"departs where the models expect > JPY {margin:,.0f} more (held-out improvement, departures read on "
           f"outcomes, "
           f"{best['improvement']:,.0f} per decision, lower bound {best['lcb']:,.0f}, {best['departures']:,} of "
           f"{len(resp_holdout):,} held-out decisions)" if math.isfinite(margin) else
           f"no departure yet: no margin's lower bound is above zero with {least} departures the log took "
           f"(by weight), on "
           f"{len(resp_holdout):,} held-out decisions (at most "
           f"{max((t.get('observed', 0) for t in trials), default=0)} observed, "
           f"{max((t.get('effective', 0) for t in trials), default=0):.0f} by weight)"))
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


BASELINE_TESTS = ("channel", "channel_offer", "decision")


def _pooled(logged: LoggedValues, logs: pd.DataFrame, space: ActionSpace, test: str) -> safe.Pooled | None:
    """params policy.safe.baseline_test as what the learned baseline's test reads: `channel` (the model's
    difference on every decision, its error corrected by each channel's mean residual: `safe.pooled_bound`),
    `channel_offer` (by each channel and offer's) or `decision` (each decision's own doubly robust scores:
    None)."""
    if test not in BASELINE_TESTS:
        raise ValueError(f"params policy.safe.baseline_test must be one of {BASELINE_TESTS}, not {test!r}")
    if test == "decision":
        return None
    key = (lambda a: a[0]) if test == "channel" else (lambda a: (a[0], a[2]))
    keys = sorted({key(a) for a in space.actions})
    group = np.array([keys.index(key(a)) for a in space.actions], dtype=np.int64)
    value = safe.per_unit(np.where(np.isfinite(logged.value), logged.value, 0.0), logs["arrears"].to_numpy())
    return safe.Pooled(value, logged.residual, logs["action"].to_numpy(), group)


def _prefs(base: safe.SafePolicy, logs: pd.DataFrame, windows: tuple[str, ...]) -> np.ndarray:
    """The baseline's actions in order of preference for logged decisions (their days past due, arrears)."""
    return base.preferences_of(logs, windows)


def _learned_baseline(base: safe.SafePolicy, value: np.ndarray, scores: np.ndarray, allowed: np.ndarray,
                      logs: pd.DataFrame, space: ActionSpace, z: float, evidence: dict, least: int = 30,
                      folds: int = 2, retire_z: float = 1.645, supported: np.ndarray | None = None,
                      segment_by: str = "", pooled: safe.Pooled | None = None) -> safe.SafePolicy:
    """The best single action for everyone (with the ranking of the others, what stands in where the rules
    forbid it), where it beats the configured baseline (the playbook) on the randomised decisions; else the
    configured baseline.

    Both the pick and the test read the doubly robust scores as shares of each decision's arrears
    (`safe.per_unit`), and the test is cross-fitted (`safe.honest_improvement`: each fold of accounts judged
    by the ranking learned on the others, `folds` of them). With `pooled` (params policy.safe.baseline_test:
    channel, the default) the test reads the model's difference on every decision, corrected by each channel's
    mean residual (`safe.pooled_bound`), instead of each decision's own scores, and so does the pick
    (`safe.pooled_scores`, unless `pooled.pick` is off). It replaces the playbook where
    that improvement `z` standard errors below its mean (params policy.safe.baseline_z, default 0) is above
    zero, with at least `least` decisions, counted by weight, that took the ranking's action where the two differ
    (models.safe.observed and effective: else the estimate is the model's opinion, or a few rare draws' luck).
    Both the pick and the test read only decisions whose logging policy gave the action a chance (`supported`,
    from the decision log's distributions; everywhere for decisions recorded without one). Until then the
    ranking is the `contender`: an experiment arm, and the challenger a share of the accounts is served
    (policy.experiments.challenger), unless it has lost: its improvement `retire_z` standard errors above the
    mean is below zero, on at least `least` decisions by weight.

    Why not a 95% bound, as for the departures: the shipped playbook is a guess about a portfolio nobody
    here has seen, not a rule a team has proven, and the best single action is what the product promises
    never to do worse than; the cross-fitting, not the bound, keeps the winner's curse out. Measured with
    the truth on 10 cells (docs/models.md, the safe policy). A team that has proven its own rule says
    `policy.baseline: playbook`.

    Never no contact for everyone in place of a configured baseline: when no contact action is estimated to
    pay, the configured baseline stays. That estimate rests on the no-contact chance of a few hold-outs, and
    once served, such a baseline stops the outcomes that would correct it: in the closed loop on `lease`
    (20,000 accounts, seed 1) a test of +0.019 (se 0.099) of the arrears, then +0.108 (se 0.089), put it in
    charge, worth 0 where the playbook was worth about 3,000 JPY per overdue account (docs/benchmarks.md).

    By segment (`segment_by`, params policy.safe.segment_by: a feature such as the lifestyle, `employment`):
    one ranking per level, everyone's estimates scaled by the level's reach of each channel and window
    (`safe.segment_rankings`), tested the same way against the configured baseline and against the one
    ranking (`safe.honest_segments`, the second at the departures' bound `retire_z`, policy.safe.z); it is the
    baseline where it passes both."""
    design = safe.action_design(space.actions[:-1])
    shares = safe.per_unit(scores, logs["arrears"].to_numpy(dtype=np.float64))
    basis = shares if pooled is None or not pooled.pick else safe.pooled_scores(pooled, np.ones(len(logs), bool))
    single, means = safe.best_single(basis, allowed, design, supported)
    learned = safe.SafePolicy(single, ranking=safe.ranking(means))
    evidence["best_single_text"] = _action_text(space, single)
    evidence["best_single_share"] = float(means[single]) if single >= 0 else 0.0  # of the arrears, net of cost
    windows = space.windows
    configured = base.playbook is not None or base.baseline >= 0
    if configured and not learned.ranking:  # no contact for everyone: the team's decision, never a test's
        evidence["challenger"] = ("none: no contact action is estimated to pay; the configured baseline stays "
                                  "(stopping all contact is set in policy.baseline, not learned)")
        return base
    fold = pd.util.hash_array(logs["account_id"].astype(str).to_numpy(dtype=object)) % max(folds, 2)
    taken, propensity = logs["action"].to_numpy(), logs["propensity"].to_numpy(dtype=float)
    current = base.base(value[:, :-1], _prefs(base, logs, windows)) if configured else \
        learned.base(value[:, :-1])
    if configured:
        test = safe.honest_improvement(shares, allowed, design, current, value[:, :-1], fold, z, taken, propensity,
                                       supported, pooled)
        evidence["best_single_vs_configured"] = {**test, "z": z, "unit": "share of the arrears"}
    by_segment = _by_segment(learned, means, shares, allowed, design, current, value, fold, z, logs, space,
                             supported, segment_by, evidence, least, taken, propensity, segment_z=retire_z)
    if configured and not _passes(test, least):
        if by_segment is None:
            lost = test["effective"] >= least and test["improvement"] + retire_z * test["se"] < 0
            evidence["challenger"] = ("retired: it does worse than the playbook" if lost else "in trial"
                                      if learned.ranking else "none: no contact action is estimated to pay")
            return dataclasses.replace(base, contender=() if lost else learned.ranking)
        evidence["challenger"] = "none: the ranking by segment replaces the playbook"
    if by_segment is not None:
        evidence.update(_baseline_words(by_segment, space, _segment_source(segment_by, len(logs))))
        return by_segment
    evidence.update(_baseline_words(learned, space, f"best single action by doubly robust value on {len(logs):,} "
                                                    f"randomised decisions, smoothed over channel, window and offer"))
    return learned


def _passes(test: dict, least: int) -> bool:
    """A cross-fitted test passed: its lower bound above zero on at least `least` decisions by weight."""
    return test["lcb"] > 0 and test.get("effective", test["observed"]) >= least


def _segment_source(segment_by: str, decisions: int) -> str:
    return (f"best single action for each {segment_by} (doubly robust value on {decisions:,} randomised decisions, "
            f"scaled by each {segment_by}'s reach of every channel and window)")


def _by_segment(learned: safe.SafePolicy, means: np.ndarray, shares: np.ndarray, allowed: np.ndarray,
                design: np.ndarray, current: np.ndarray, value: np.ndarray, fold: np.ndarray, z: float,
                logs: pd.DataFrame, space: ActionSpace, supported: np.ndarray | None, segment_by: str,
                evidence: dict, least: int, taken: np.ndarray, propensity: np.ndarray, segment_z: float = 1.645
                ) -> safe.SafePolicy | None:
    """The learned baseline with one ranking per level of `segment_by` where the cross-fitted tests say it
    beats the configured baseline (`current`, its improvement `z` standard errors below the mean above zero)
    and the one ranking (`segment_z` below: a departure from the best single action for everyone, held to the
    departures' bound, policy.safe.z); else None (evidence says why).

    Why the departures' bound against the one ranking: at `baseline_z` (0) it was adopted on +0.013 (se 0.036)
    of the arrears on `digital` (seed 2, 20,000 accounts), where an unanswered text still works and reach
    says less, and served 0.88x the best single action against 1.12x for the one ranking (docs/models.md)."""
    if not segment_by or not learned.ranking:
        return None
    if segment_by not in logs or "reached" not in logs:
        evidence["by_segment"] = {"segment_by": segment_by, "why": f"the logs have no {segment_by} or reach"}
        return None
    segment = logs[segment_by].to_numpy(dtype=np.float64)
    reached = pd.to_numeric(logs["reached"], errors="coerce").to_numpy(dtype=np.float64)
    actions = space.actions[:-1]
    tests = safe.honest_segments(shares, allowed, design, current, value[:, :-1], fold, z, taken, propensity,
                                 segment, reached, actions, supported, z_one=segment_z)
    levels, ratios = safe.reach_ratios(segment, taken, reached, actions)
    adopted = _passes(tests["current"], least) and _passes(tests["one ranking"], least)
    evidence["by_segment"] = {"segment_by": segment_by, "levels": int(len(levels)), "adopted": bool(adopted),
                              "z": z, "z_against_one_ranking": segment_z,
                              **{f"vs {k}": v for k, v in tests.items()}, "unit": "share of the arrears"}
    if not adopted:
        return None
    return dataclasses.replace(learned, segment_by=segment_by,
                               segments=safe.segment_rankings(means, levels, ratios))


def _baseline_words(base: safe.SafePolicy, space: ActionSpace, source: str) -> dict:
    """The evidence's plain words for a baseline: its source and its text (used in reasons)."""
    if base.playbook is not None:
        return {"baseline_source": source, "baseline_text": "the playbook",
                "playbook": [step.text() for step in base.playbook.steps]}
    text = _action_text(space, base.baseline)
    stand_ins = list(base.ranking[1:3]) or ([base.fallback] if base.fallback >= 0 else [])
    if stand_ins:
        text += (f" (where the rules forbid it: {', then '.join(_action_text(space, a) for a in stand_ins)}"
                 + (", and so on" if len(base.ranking) > 3 else "") + ")")
    if base.segments:
        text += (f"; for each {base.segment_by} its own order of the same actions, by how often each channel and "
                 f"time reaches it")
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
    portfolio, fed, blocked, support = feedback.load(read_dir(data), decision_log, config)
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
        safe_policy = fit_safe_policy(response, resp_train, resp_holdout, names, params, portfolio, log=log,
                                      blocked=blocked, support=support)
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
                       portfolio=portfolio, decisions_holdout=resp_holdout, data=Path(data), blocked=blocked,
                       support=support)


def usual_values(train: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """The median of each numeric feature over the training examples: what a reason calls 'the usual'."""
    medians = train[[n for n in names if n not in CATEGORICAL]].median(skipna=True)
    return {name: float(v) for name, v in medians.items() if np.isfinite(v)}


def _band_line(fresh: dict) -> str:
    """The fresh-arrears figures in one log line."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    return (f"fresh arrears (1-90 days past due, {fresh['n']:,} holdout cases): ROC AUC {fmt(fresh['roc_auc'])}, "
            f"baseline {fmt(fresh['baseline_roc_auc'])}, lift {fmt(fresh['auc_lift'])}, ECE {fmt(fresh['ece'])}, "
            f"calibration error (debiased RMS) {fmt(fresh.get('rmsce_debiased'))}")


def training_reference(bundle: ScoringBundle, portfolio: Portfolio, train: pd.DataFrame, p_holdout: np.ndarray,
                       end: pd.Timestamp) -> dict:
    """What `cureflow monitor` compares a later batch with: the training examples' features, the holdout's
    cure chances, the action mix of the batch the model makes at the end of its history, and the profile
    of the accounts overdue on each of the last `monitor.reference_days` days (keyed by local day of month)."""
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


def save_outputs(result: TrainResult, out_dir: Path) -> dict[str, Path]:
    """Write the bundle, metrics, holdout predictions, plots and the model report under out_dir (the DVC
    outputs of the train stage)."""
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
    model_report.write_report(result, files, files["report"])
    return files


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
