"""`cureflow evaluate`: how much the policy is worth.

1. Off-policy, on held-out logs (decisions made after the response model's training cut-off): the new
   policy's value by inverse propensity (IPS, self-normalised SNIPS) and doubly robust (DR) estimates with
   95% intervals, beside the logging policy's own value. The policy here is the greedy one over the
   actions the consent and legal flags allowed at decision time (what the experiments drew from).
2. On simulated data, against the simulator's exact truth at the as-of time: the policy's true value,
   against no contact, the best single action for everyone, and the oracle that knows each account's
   true best allowed action; and an audit of every decision against the contact rules.
Values are in money (JPY): (chance of payment with the action - without) x arrears - cost of the action.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models import calendar, vocab
from models import policy as decision_policy
from models.bundle import ScoringBundle
from models.contract import Portfolio
from models.features import prepare
from models.files import write_json_atomic
from models.response import ARM_OFFERS, ActionSpace, ResponseModel
from pipelines import feedback
from pipelines.examples_from_logs import decision_examples


def action_costs(costs: dict[str, float], space: ActionSpace) -> np.ndarray:
    """The cost of every action of the space (params policy.costs; no contact costs nothing)."""
    return np.array([float(costs.get(c, 0.0)) for c, _, _ in space.actions])


def _costs(bundle: ScoringBundle, space: ActionSpace) -> np.ndarray:
    return action_costs(bundle.policy_config.costs, space)


def allowed_actions(channel_ok: np.ndarray, arm_ok: np.ndarray, n_windows: int) -> np.ndarray:
    """(n, actions) allowed mask over the space (no contact always allowed)."""
    ok = channel_ok[:, :, None, None] & arm_ok[:, None, None, :]
    ok = np.broadcast_to(ok, (len(ok), ok.shape[1], n_windows, ok.shape[3])).reshape(len(ok), -1)
    return np.hstack([ok, np.ones((len(ok), 1), dtype=bool)])


def allowed_logged(portfolio: Portfolio, account_ids: pd.Series, space: ActionSpace) -> np.ndarray:
    """What the experiments could draw from: consented channels, none for accounts under a hold."""
    acc = portfolio.accounts.set_index("account_id").reindex(account_ids)
    held = acc[["do_not_contact", "legal_representative", "bankruptcy", "dispute_open"]].any(axis=1).to_numpy()
    consent = vocab.CONSENT_COLUMN
    channel_ok = np.column_stack([acc[consent[c]].to_numpy(dtype=bool) if c in consent else np.ones(len(acc), bool)
                                  for c in vocab.CONTACT_CHANNELS]) & ~held[:, None]
    return allowed_actions(channel_ok, np.ones((len(acc), len(ARM_OFFERS)), dtype=bool), len(space.windows))


def logged_money(response: ResponseModel, names: list[str], costs: dict[str, float], portfolio: Portfolio,
                 logs: pd.DataFrame, blocked: pd.Series = feedback.NO_BLOCKS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For logged decisions with features: the response model's (decisions, actions) chance of payment,
    each action's money against no contact (the uplift x arrears - cost; no contact, the last column, is
    0), and which actions the consent and legal flags allowed, less what each decision's own recorded rules
    blocked (`blocked`, `pipelines.feedback.Joined`: the day's call capacity among them); the action a
    decision took stays allowed."""
    space = response.space
    q = response.predict_matrix(logs[names].to_numpy(dtype=np.float64))
    stake = logs["arrears"].to_numpy(dtype=np.float64)
    money = (q - q[:, -1:]) * stake[:, None] - action_costs(costs, space)[None, :]
    return q, money, logged_allowed(portfolio, logs, space, blocked)


def logged_allowed(portfolio: Portfolio, logs: pd.DataFrame, space: ActionSpace,
                   blocked: pd.Series = feedback.NO_BLOCKS) -> np.ndarray:
    """(decisions, actions) what each logged decision allowed: the consent and legal flags, less what its own
    recorded rules blocked (`blocked`); the action it took stays allowed."""
    allowed = allowed_logged(portfolio, logs["account_id"], space)
    if not blocked.empty:
        held = feedback.blocked_actions(blocked, logs["contact_id"], space.actions)
        held[np.arange(len(logs)), logs["action"].to_numpy()] = False  # what was done was allowed
        allowed &= ~held
    return allowed


def greedy_targets(bundle: ScoringBundle, portfolio: Portfolio, logs: pd.DataFrame,
                   blocked: pd.Series = feedback.NO_BLOCKS) -> tuple[np.ndarray, np.ndarray]:
    """For logged decisions with features: the response model's (decisions, actions) chance of payment and
    the greedy policy's action (the most money among those the consent and legal flags allowed, less what each
    decision's own rules blocked: `blocked`, as `logged_money`)."""
    q, money, allowed = logged_money(bundle.response, bundle.feature_names, bundle.policy_config.costs, portfolio,
                                     logs, blocked)
    money = np.where(allowed, money, -np.inf)
    return q, np.where(money.max(axis=1) > 0, money.argmax(axis=1), bundle.response.space.none_index)


def served_targets(bundle: ScoringBundle, portfolio: Portfolio, logs: pd.DataFrame,
                   blocked: pd.Series = feedback.NO_BLOCKS) -> tuple[np.ndarray, np.ndarray]:
    """For logged decisions with features: the response model's (decisions, actions) chance of payment (0
    without one) and the action the bundle serves there, its safe policy's (models.safe.SafePolicy.apply):
    the baseline's first allowed action (the playbook's step, or the learned baseline's ranking), the model's
    best action where it beats that by the validated margin. A bundle from before the safe policy serves
    the greedy action (no contact without a response model). Experiments aside: this is the policy a
    promotion puts in charge, not its arms."""
    space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
    if bundle.response is None:
        allowed = logged_allowed(portfolio, logs, space, blocked)
        q, money = np.zeros(allowed.shape), np.zeros(allowed.shape)
    else:
        q, money, allowed = logged_money(bundle.response, bundle.feature_names, bundle.policy_config.costs,
                                         portfolio, logs, blocked)
    value = np.where(allowed, money, -np.inf)[:, :-1]
    chosen = decision_policy.greedy(value)
    if bundle.safe is not None:
        prefs = bundle.safe.preferences_of(logs, space.windows)
        chosen, _ = bundle.safe.apply(value, chosen, prefs)
    return q, np.where(chosen >= 0, chosen, space.none_index)


def off_policy(bundle: ScoringBundle, portfolio: Portfolio, end: pd.Timestamp, logs: pd.DataFrame | None = None,
               blocked: pd.Series = feedback.NO_BLOCKS) -> tuple[pd.DataFrame, int]:
    """IPS, SNIPS and DR estimates of the greedy policy beside the logging policy, on held-out logs: the
    decisions from the bundle's own response holdout start. `logs`: the decision examples
    when the caller already has them (pipelines.examples_from_logs.decision_examples), else they are built here."""
    from models import ope

    params, config = bundle.params, bundle.feature_config
    if bundle.response is None:
        return pd.DataFrame(columns=["unit", "estimator", "value", "low", "high", "n", "ess"]), 0
    if logs is None:
        logs = decision_examples(portfolio, prepare(portfolio, config), config, params, end)
    cut = pd.Timestamp(bundle.metadata["response_holdout_from"])  # randomised only: a logged propensity
    logs = logs[(logs["decided_at"] >= cut) & logs["propensity"].notna()].reset_index(drop=True)
    if logs.empty:
        return pd.DataFrame(columns=["unit", "estimator", "value", "low", "high", "n", "ess"]), 0
    stake, costs = logs["arrears"].to_numpy(), _costs(bundle, bundle.response.space)
    q, target = greedy_targets(bundle, portfolio, logs, blocked)
    taken = logs["action"].to_numpy()
    rows = np.arange(len(logs))
    out = []
    for unit, reward, q_all in (("payment rate", logs["label"].to_numpy(dtype=float), q),
                                ("JPY per decision", _money_reward(logs, stake, costs, taken), None)):
        if q_all is None:
            q_all = (q - q[:, -1:]) * stake[:, None] - costs[None, :]
        hit = (target == taken).astype(float)
        p = logs["propensity"].to_numpy(dtype=float)
        for est in (ope.logging_value(reward), ope.ips(reward, p, hit), ope.snips(reward, p, hit),
                    ope.doubly_robust(reward, p, hit, q_all[rows, taken], q_all[rows, target])):
            out.append({"unit": unit, **_row(est)})
    return pd.DataFrame(out), len(logs)


def _money_reward(logs: pd.DataFrame, stake: np.ndarray, costs: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Realised value of a logged decision, relative to no contact: paid x arrears - cost, minus what the
    hold-out arm pays on average (so the no-contact policy is worth 0)."""
    paid = logs["label"].to_numpy(dtype=float) * stake
    none = taken == len(costs) - 1
    w = 1.0 / logs["propensity"].to_numpy(dtype=float)
    baseline_rate = np.sum(w[none] * logs["label"].to_numpy()[none]) / max(np.sum(w[none]), 1e-12)
    return paid - costs[taken] - baseline_rate * stake


def _row(est) -> dict:
    return {"estimator": est.name, "value": est.value, "low": est.low, "high": est.high, "n": est.n,
            "ess": est.ess}


def truth_matrix(truth: pd.DataFrame, account_ids: np.ndarray, space: ActionSpace) -> np.ndarray:
    """(accounts, actions) true chance of a payment within 7 days, in the space's action order."""
    truth = truth.copy()
    truth.loc[truth["channel"] == "none", ["window", "offer"]] = "none"
    keys = pd.MultiIndex.from_arrays([truth["channel"], truth["window"], truth["offer"]])
    table = pd.Series(truth["p_payment_7d"].to_numpy(), index=pd.MultiIndex.from_arrays(
        [truth["account_id"], keys.get_level_values(0), keys.get_level_values(1), keys.get_level_values(2)]))
    idx = pd.MultiIndex.from_tuples([(a, c, w, o) for a in account_ids for c, w, o in space.actions])
    return table.reindex(idx).to_numpy().reshape(len(account_ids), len(space.actions))


def chosen_actions(rows: pd.DataFrame, bundle: ScoringBundle, space: ActionSpace) -> np.ndarray:
    """The action index of each batch row (window from its start in local time, arm from its offer)."""
    windows = calendar.parse_windows(bundle.params["calendar"])
    starts = pd.Series([pd.Timestamp(s).tz_localize(None) if s else pd.NaT for s in rows["window_start"]])
    codes = calendar.window_codes(starts.fillna(pd.Timestamp("2000-01-01 03:00")), windows)
    names = np.array([w.name for w in windows] + ["none"], dtype=object)
    arm = np.where(rows["offer"].to_numpy() == "reminder", "reminder", "instalment_plan")
    channel = rows["channel"].to_numpy()
    return space.index(channel, names[codes], np.where(channel == "none", "none", arm))


@dataclass(frozen=True)
class TrueValues:
    """Per overdue account (in `bundle.constraints` order), from the simulator's truth: the chance of payment
    under every action of the space (P), each action's JPY value against no contact (the payment uplift x
    arrears - the action's cost), which actions the rules allow, and the arrears and model inputs they came
    from."""

    space: ActionSpace
    account_id: np.ndarray
    P: np.ndarray
    value: np.ndarray
    allowed: np.ndarray
    arrears: np.ndarray
    X: np.ndarray

    @classmethod
    def of(cls, bundle: ScoringBundle, portfolio: Portfolio, truth: pd.DataFrame, as_of: pd.Timestamp
           ) -> TrueValues:
        space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
        cons = bundle.constraints(portfolio, as_of)
        P = truth_matrix(truth, cons["account_id"], space)
        value = (P - P[:, -1:]) * cons["arrears"][:, None] - _costs(bundle, space)[None, :]
        allowed = allowed_actions(cons["channel_ok"], cons["arm_ok"], len(space.windows))
        return cls(space, cons["account_id"], P, value, allowed, cons["arrears"], cons["X"])

    def chosen(self, rows: pd.DataFrame, bundle: ScoringBundle) -> np.ndarray:
        """The action index of each account's batch row, in this order."""
        return chosen_actions(rows.set_index("account_id").loc[self.account_id].reset_index(), bundle, self.space)

    def value_of(self, chosen: np.ndarray) -> float:
        """The mean value of the chosen actions (one per account, in this order)."""
        return float(self.value[np.arange(len(self.value)), chosen].mean())

    def oracle(self) -> float:
        """The mean value of the best allowed action per account (no contact when nothing pays)."""
        return float(np.maximum(np.where(self.allowed, self.value, 0.0).max(axis=1), 0.0).mean())

    def uplift(self, chosen: np.ndarray) -> float:
        """The mean true payment uplift of the chosen actions over no contact."""
        return float((self.P[np.arange(len(self.P)), chosen] - self.P[:, -1]).mean())


def truth_values(bundle: ScoringBundle, portfolio: Portfolio, truth: pd.DataFrame, as_of: pd.Timestamp,
                 explore: float) -> dict:
    """True value per overdue account of the policy, no contact, the best single action and the oracle,
    with the rule violations by the rules' own mask and by the independent audit."""
    tv = TrueValues.of(bundle, portfolio, truth, as_of)
    scored = bundle.score(portfolio, as_of, explore=explore)
    chosen = tv.chosen(scored, bundle)
    single = np.where(tv.allowed, tv.value, 0.0).mean(axis=0)
    best = int(single.argmax())
    out = {"accounts": int(len(tv.value)), "policy": tv.value_of(chosen), "no_contact": 0.0,
           "best_single_action": float(single[best]), "best_single_action_is": "/".join(tv.space.actions[best]),
           "oracle": tv.oracle(),
           "violations": int((~tv.allowed[np.arange(len(tv.value)), chosen]).sum()),
           "audit_violations": audit(scored, portfolio, as_of),
           "policy_payment_uplift": tv.uplift(chosen)}
    if bundle.safe is not None:  # the baseline alone: the same bundle that never departs
        stay = dataclasses.replace(bundle, safe=dataclasses.replace(bundle.safe, margin=math.inf))
        base_chosen = tv.chosen(stay.score(portfolio, as_of, explore=explore), bundle)
        out["baseline"] = tv.value_of(base_chosen)
        out["baseline_is"] = bundle.safe.evidence.get("baseline_text", "")
        out["departures"] = int((base_chosen != chosen).sum())
    out["share_of_oracle"] = out["policy"] / out["oracle"] if out["oracle"] else float("nan")
    single_value = out["best_single_action"]
    out["times_best_single"] = out["policy"] / single_value if single_value > 0 else float("nan")
    return out


def audit(rows: pd.DataFrame, portfolio: Portfolio, as_of: pd.Timestamp, hours=("08:00", "21:00")) -> list[str]:
    """An independent check of each decision against the contract's raw flags and COMPLIANCE.md's
    hours: every breach, named by account and rule. Empty means zero violations."""
    acc = portfolio.accounts.set_index("account_id").reindex(rows["account_id"])
    problems = []
    channel = rows["channel"].to_numpy()
    contact = channel != "none"
    for flag, rule in (("do_not_contact", "R-CEASE"), ("legal_representative", "R-REPRESENTED"),
                       ("bankruptcy", "R-INSOLVENCY"), ("dispute_open", "R-DISPUTE")):
        problems += [f"{a}: {rule}" for a in rows["account_id"][contact & acc[flag].to_numpy(dtype=bool)]]
    for ch, col in vocab.CONSENT_COLUMN.items():
        problems += [f"{a}: R-CONSENT {ch}" for a in rows["account_id"][(channel == ch) & ~acc[col].to_numpy(bool)]]
    vulnerable = acc["vulnerable"].to_numpy(dtype=bool) & np.isin(channel, ["sms", "email", "ivr"])
    problems += [f"{a}: R-VULNERABLE" for a in rows["account_id"][vulnerable]]
    auto_legal = (rows["offer"].to_numpy() == "legal_review") & (rows["tier"].to_numpy() != vocab.HUMAN_REVIEW)
    problems += [f"{a}: R-LEGAL" for a in rows["account_id"][auto_legal]]
    lo, hi = hours
    for a, s, e in zip(rows["account_id"][contact], rows["window_start"][contact], rows["window_end"][contact],
                       strict=True):
        start, end = pd.Timestamp(s), pd.Timestamp(e)
        if start < as_of or start.strftime("%H:%M") < lo or end.strftime("%H:%M") > hi or end <= start:
            problems.append(f"{a}: R-HOURS {s}..{e}")
    return problems


def run(bundle: ScoringBundle, portfolio: Portfolio, data: Path, as_of: pd.Timestamp, end: pd.Timestamp,
        explore: float, out: Path | None = None, log=print, logs: pd.DataFrame | None = None,
        blocked: pd.Series = feedback.NO_BLOCKS) -> dict:
    """Everything `cureflow evaluate` prints, also written as JSON to `out`. `logs`: the logged decisions
    with their features when already built (the DVC features stage), else they are built here. `blocked`: what
    each carried-out decision's own rules blocked (`pipelines.feedback.Joined`), never the greedy policy's
    action there."""
    report: dict = {"as_of": as_of.isoformat(), "explore": explore, "model_version": bundle.model_version}
    from models.progress import step

    with step("evaluate: off-policy estimates on the held-out logs"):
        table, n = off_policy(bundle, portfolio, end, logs=logs, blocked=blocked)
    report["off_policy"] = table.to_dict("records")
    if n:
        log(f"off-policy, {n:,} held-out logged decisions (95% intervals):")
        log(table.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
    else:
        log("off-policy: no response model or no held-out logged decisions with a propensity; nothing to estimate")
    truth_file = Path(data) / "truth" / "actions.parquet"
    if truth_file.exists():
        with step("evaluate: the policy against the simulator's truth"):
            report["truth"] = truth_values(bundle, portfolio, pd.read_parquet(truth_file), as_of, explore)
        t = report["truth"]
        log(f"true value per overdue account (JPY, {t['accounts']:,} accounts as of {as_of.isoformat()}): "
            f"policy {t['policy']:,.0f}, no contact 0, best single action {t['best_single_action']:,.0f} "
            f"({t['best_single_action_is']}), oracle {t['oracle']:,.0f}")
        if "baseline" in t:
            log(f"baseline ({t['baseline_is']}): {t['baseline']:,.0f}; the policy departs from it for "
                f"{t['departures']:,} of {t['accounts']:,} accounts")
        log(f"policy captures {t['share_of_oracle']:.1%} of the oracle's gain and {t['times_best_single']:.2f}x "
            f"the best single action's; rule violations: {t['violations']} (mask), "
            f"{len(t['audit_violations'])} (audit)")
    if out:
        write_json_atomic(report, out, indent=2, default=float)
    return report

