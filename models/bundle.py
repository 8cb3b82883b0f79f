"""The one fitted object that serving loads: feature builder config, models, policy and rules config.

`ScoringBundle.score` is the single scoring path: the API (one account), the nightly batch (the whole
portfolio) and Spark (a partition) all call it, so a batch row and a real-time answer for the same
account, data and model are the same row. It returns the contract's flattened batch rows, plus private
`_`-prefixed columns the batch needs for the day's call capacity (the best action without a call).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models import calendar, policy, rules, vocab
from models.contract import Portfolio
from models.estimators import CalibratedLGBM
from models.features import FeatureConfig, features_at, prepare
from models.reasons import action_drivers, action_reason, top_reasons
from models.response import ARM_OFFERS, ResponseModel

BATCH_COLUMNS = ("account_id", "as_of", "model_version", "cure_probability", "priority", "tier", "channel",
                 "window_start", "window_end", "offer", "template", "expected_gain", "reasons", "blocked",
                 "decision_id", "propensity")
TEXT_COLUMNS = ("account_id", "as_of", "model_version", "tier", "channel", "window_start", "window_end", "offer",
                "template", "reasons", "blocked")
ALT_COLUMNS = ("_value", "_alt_value", "_alt_channel", "_alt_window_start", "_alt_window_end", "_alt_offer",
               "_alt_template", "_alt_gain")
DECISION_NAMESPACE = uuid.UUID("6f1c2d1e-8a4b-4c1e-9a57-0c0ffee0cafe")


def uniforms(account_ids: np.ndarray, as_of: pd.Timestamp, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two uniforms per account, seeded by account, as-of time and the params seed (reruns agree)."""
    frame = pd.DataFrame({"account_id": np.asarray(account_ids, dtype=object), "as_of": as_of.isoformat()})
    out = []
    for salt in ("explore", "pick"):
        key = f"{seed:08d}{salt}"[:16].ljust(16, "0")
        h = pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy()
        out.append((h >> np.uint64(11)).astype(np.float64) / float(1 << 53))
    return out[0], out[1]


@dataclass
class ScoringBundle:
    """Everything a decision needs, fitted once and loaded unchanged by the API, the batch and Spark."""

    params: dict
    feature_names: list[str]
    cure: CalibratedLGBM
    response: ResponseModel | None   # None until randomised decisions are logged
    run_id: str = ""
    model_version: str = "unregistered"
    metadata: dict = field(default_factory=dict)

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_params(self.params)

    @property
    def policy_config(self) -> policy.PolicyConfig:
        return policy.PolicyConfig.from_params(self.params["policy"])

    @property
    def rules_config(self) -> rules.RulesConfig:
        return rules.RulesConfig.from_params(self.params["rules"])

    def features(self, portfolio: Portfolio, as_of: pd.Timestamp) -> pd.DataFrame:
        """The point-in-time feature frame of every account (one row per account, contract order)."""
        config = self.feature_config
        return features_at(prepare(portfolio, config), as_of, config)

    def score(self, portfolio: Portfolio, as_of: pd.Timestamp, history_unknown: frozenset[str] = frozenset(),
              explore: float | None = None, keep_features: bool = False) -> pd.DataFrame:
        """Batch rows for every account overdue at `as_of`, highest priority first.

        `history_unknown` names accounts whose contact history was not sent: the rules fail closed for them.
        `explore` overrides params' policy.explore (0 turns exploration off). `keep_features` adds a private
        `_features` column (the model inputs of each decision, for the decision log).
        """
        as_of = pd.Timestamp(as_of).tz_convert("UTC")
        feats = self.features(portfolio, as_of)
        overdue = feats["arrears"].to_numpy() > 0
        accounts = portfolio.accounts.loc[overdue].reset_index(drop=True)
        feats = feats.loc[overdue].reset_index(drop=True)
        if not len(feats):
            return pd.DataFrame({c: pd.Series(dtype=object) for c in (*BATCH_COLUMNS, *ALT_COLUMNS)})
        contacts = portfolio.contacts
        contacts = contacts[contacts["account_id"].isin(set(accounts["account_id"]))]
        eps = self.policy_config.explore if explore is None else float(explore)
        rows = self._decide(accounts, contacts, feats, as_of, history_unknown, eps)
        if keep_features:
            inputs = feats.set_index("account_id")[self.feature_names]
            inputs = inputs.astype(object).where(inputs.notna(), None)
            rows["_features"] = [inputs.loc[a].to_dict() for a in rows["account_id"]]
        return rows

    def constraints(self, portfolio: Portfolio, as_of: pd.Timestamp) -> dict[str, np.ndarray]:
        """For every account overdue at `as_of`: its id, arrears, features, and the channels and arms
        (reminder, arrangement) the rules and the staged offer allow; for evaluations."""
        as_of = pd.Timestamp(as_of).tz_convert("UTC")
        feats = self.features(portfolio, as_of)
        overdue = feats["arrears"].to_numpy() > 0
        accounts = portfolio.accounts.loc[overdue].reset_index(drop=True)
        feats = feats.loc[overdue].reset_index(drop=True)
        staged, verdict = self._verdict(accounts, portfolio.contacts, feats, as_of, frozenset())
        return {"account_id": accounts["account_id"].to_numpy(dtype=object), "arrears": feats["arrears"].to_numpy(),
                "X": feats[self.feature_names].to_numpy(dtype=np.float64),
                "channel_ok": verdict.channel_allowed & ~verdict.suppress_all[:, None],
                "arm_ok": policy.arm_offers_allowed(staged, verdict.offer_allowed)}

    def _verdict(self, accounts, contacts, feats, as_of, history_unknown):
        """The staged offer and what the rules allow."""
        pconf, rconf = self.policy_config, self.rules_config
        broken = (feats["promises_made_90d"] - feats["promises_kept_90d"]).to_numpy()
        staged = policy.staged_offer(feats["arrears_instalments"].to_numpy(), feats["days_past_due"].to_numpy(),
                                     broken, accounts["vulnerable"].to_numpy(dtype=bool), pconf)
        facts = rules.rule_facts(accounts, contacts, as_of, rconf)
        if history_unknown:
            facts.loc[accounts["account_id"].isin(history_unknown).to_numpy(), "history_known"] = False
        return staged, rules.evaluate(accounts, facts, as_of, rconf, proposed_offer=staged)

    def gains(self, X: np.ndarray) -> np.ndarray:
        """(n, channels, windows, arms) chance of payment with each action minus with no contact
        (zero everywhere without a response model: nothing is known to beat doing nothing)."""
        n_win = len(calendar.parse_windows(self.params["calendar"]))
        shape = (len(X), len(vocab.CONTACT_CHANNELS), n_win, len(ARM_OFFERS))
        if self.response is None:
            return np.zeros(shape)
        p = self.response.predict_matrix(X)
        return (p[:, :-1] - p[:, -1:]).reshape(shape)

    def _decide(self, accounts, contacts, feats, as_of, history_unknown, eps) -> pd.DataFrame:
        X = feats[self.feature_names].to_numpy(dtype=np.float64)
        cure_p = np.round(self.cure.calibrate(self.cure.booster_.predict(X, raw_score=True)), 6)
        staged, verdict = self._verdict(accounts, contacts, feats, as_of, history_unknown)
        arrears = feats["arrears"].to_numpy()
        channel_ok = verdict.channel_allowed & ~verdict.suppress_all[:, None]
        u, v = uniforms(accounts["account_id"].to_numpy(), as_of, int(self.params["seed"]))
        arm_ok = policy.arm_offers_allowed(staged, verdict.offer_allowed)
        choice = policy.choose(self.gains(X), arrears, channel_ok, arm_ok, self.policy_config, u, v, eps)
        main = self._action_columns(accounts, verdict, staged, choice.channel, choice.window, choice.arm)
        alt = self._action_columns(accounts, verdict, staged, *choice.alt[:3])
        rows = self._rows(accounts, feats, X, as_of, cure_p, verdict, choice, main)
        for key in ("channel", "window_start", "window_end", "offer", "template"):
            rows[f"_alt_{key}"] = alt[key]
        rows["_alt_gain"], rows["_alt_value"], rows["_value"] = np.round(choice.alt[3], 6), choice.alt[4], choice.value
        rows["decision_id"] = self._decision_ids(rows, X)
        rows = rows.sort_values(["priority", "account_id"], ascending=[False, True], kind="stable")
        return rows.loc[:, [*BATCH_COLUMNS, *ALT_COLUMNS]].reset_index(drop=True)

    def _action_columns(self, accounts, verdict, staged, channel_idx, window_idx, arm_idx) -> dict[str, list]:
        """Channel, contact window, offer and template of chosen action indices (-1 = no contact)."""
        channel = np.where(channel_idx >= 0, np.array(vocab.CONTACT_CHANNELS, dtype=object)[channel_idx], "none")
        offer = np.where(channel == "none", "none", policy.final_offer(staged, arm_idx))
        starts, ends = self._windows(accounts, verdict, window_idx, channel)
        template = [f"{o}_{c}_v1" if c != "none" else None for o, c in zip(offer, channel, strict=True)]
        return {"channel": list(channel), "offer": list(offer), "template": template,
                "window_start": [s.isoformat() if s is not None else None for s in starts],
                "window_end": [e.isoformat() if e is not None else None for e in ends], "_starts": starts}

    def _rows(self, accounts, feats, X, as_of, cure_p, verdict, choice, main) -> pd.DataFrame:
        """The contract's batch columns (decision id added by the caller)."""
        arrears = feats["arrears"].to_numpy()
        local_today = np.array([s is not None and s.date() == as_of.tz_convert(s.tzinfo).date()
                                for s in main["_starts"]], dtype=bool)
        channel = np.array(main["channel"], dtype=object)
        tier = policy.tiers(channel, verdict.held_by, verdict.require_human, verdict.suppress_all, local_today,
                            choice.value, self.policy_config)
        reasons = top_reasons(self.cure.booster_.predict(X, pred_contrib=True), X, self.feature_names, k=3)
        windows = [w.name for w in calendar.parse_windows(self.params["calendar"])]
        drivers = self._drivers(X, choice)
        for i, items in enumerate(reasons):
            items.append(action_reason(channel[i], windows[choice.window[i]] if choice.window[i] >= 0 else None,
                                       float(choice.gain[i]), bool(choice.explored[i]), drivers[i]))
        rows = pd.DataFrame({
            "account_id": accounts["account_id"].to_numpy(dtype=object), "as_of": as_of.isoformat(),
            "model_version": self.model_version, "cure_probability": cure_p,
            "priority": policy.priority(cure_p, arrears, choice.value), "tier": tier, "channel": channel,
            "window_start": main["window_start"], "window_end": main["window_end"], "offer": main["offer"],
            "template": main["template"], "expected_gain": np.round(choice.gain, 6),
            "reasons": [json.dumps(r, ensure_ascii=False) for r in reasons],
            "blocked": [json.dumps(b, ensure_ascii=False) for b in verdict.blocked],
            "propensity": np.round(choice.propensity, 6),
        })
        for col in TEXT_COLUMNS:  # pandas 3 would infer a string dtype with NaN for None
            rows[col] = pd.Series(rows[col].tolist(), dtype=object).where(rows[col].notna(), None)
        return rows

    def _drivers(self, X: np.ndarray, choice) -> list[str | None]:
        """The feature behind each chosen contact, from the response model's own contributions."""
        if self.response is None:
            return [None] * len(X)
        space = self.response.space
        n_win, n_arm = len(space.windows), len(ARM_OFFERS)
        action = np.where(choice.channel >= 0, (choice.channel * n_win + choice.window) * n_arm + choice.arm,
                          space.none_index)
        drivers = action_drivers(self.response.contributions(X, action), X, self.feature_names)
        return [d if c >= 0 else None for d, c in zip(drivers, choice.channel, strict=True)]

    def _windows(self, accounts: pd.DataFrame, verdict, win_idx: np.ndarray, channel: np.ndarray):
        """R-HOURS: the chosen window's next occurrence in local time, from the rules' earliest instant."""
        windows = calendar.parse_windows(self.params["calendar"])
        not_before = pd.to_datetime(verdict.not_before, utc=True)
        starts, ends = [], []
        for i, w in enumerate(win_idx):
            span = None
            if channel[i] != "none" and w >= 0:
                span = rules.contact_window(windows[w].name, not_before[i], accounts["timezone"].iat[i],
                                            self.rules_config, windows)
            starts.append(span[0] if span else None)
            ends.append(span[1] if span else None)
        return starts, ends

    def _decision_ids(self, rows: pd.DataFrame, X: np.ndarray) -> list[str]:
        """Deterministic ids: the same account, inputs, as-of, model and policy give the same id."""
        digest = pd.util.hash_pandas_object(pd.DataFrame(X), index=False).to_numpy()
        salt = f"{self.model_version}|{self.policy_config.version}"
        return [str(uuid.uuid5(DECISION_NAMESPACE, f"{a}|{t}|{salt}|{d:016x}|{c}|{w}"))
                for a, t, d, c, w in zip(rows["account_id"], rows["as_of"], digest, rows["channel"],
                                         rows["window_start"], strict=True)]
