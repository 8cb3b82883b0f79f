"""The one fitted object that serving loads: feature builder config, models, policy and rules config.

`ScoringBundle.score` is the single scoring path: the API (one account), the nightly batch (the whole
portfolio) and Spark (a partition) all call it, so a batch row and a real-time answer for the same
account, data and model are the same row. It returns the contract's flattened batch rows.
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
from models.reasons import top_reasons
from models.response import ArmTable

BATCH_COLUMNS = ("account_id", "as_of", "model_version", "cure_probability", "priority", "tier", "channel",
                 "window_start", "window_end", "offer", "template", "expected_gain", "reasons", "blocked",
                 "decision_id", "propensity")
TEXT_COLUMNS = ("account_id", "as_of", "model_version", "tier", "channel", "window_start", "window_end", "offer",
                "template", "reasons", "blocked")
DECISION_NAMESPACE = uuid.UUID("6f1c2d1e-8a4b-4c1e-9a57-0c0ffee0cafe")


@dataclass
class ScoringBundle:
    """Everything a decision needs, fitted once and loaded unchanged by the API, the batch and Spark."""

    params: dict
    feature_names: list[str]
    cure: CalibratedLGBM
    response: ArmTable
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

    def score(self, portfolio: Portfolio, as_of: pd.Timestamp, history_unknown: frozenset[str] = frozenset()
              ) -> pd.DataFrame:
        """Batch rows for every account overdue at `as_of`, highest priority first.

        `history_unknown` names accounts whose contact history was not sent: the rules fail closed for them.
        """
        as_of = pd.Timestamp(as_of).tz_convert("UTC")
        feats = self.features(portfolio, as_of)
        overdue = feats["arrears"].to_numpy() > 0
        accounts = portfolio.accounts.loc[overdue].reset_index(drop=True)
        feats = feats.loc[overdue].reset_index(drop=True)
        if not len(feats):
            return pd.DataFrame({c: pd.Series(dtype=object) for c in BATCH_COLUMNS})
        contacts = portfolio.contacts
        contacts = contacts[contacts["account_id"].isin(set(accounts["account_id"]))]
        return self._decide(accounts, contacts, feats, as_of, history_unknown)

    def _decide(self, accounts: pd.DataFrame, contacts: pd.DataFrame, feats: pd.DataFrame,
                as_of: pd.Timestamp, history_unknown: frozenset[str]) -> pd.DataFrame:
        X = feats[self.feature_names].to_numpy(dtype=np.float64)
        raw = self.cure.booster_.predict(X, raw_score=True)
        cure_p = np.round(self.cure.calibrate(raw), 6)
        contrib = self.cure.booster_.predict(X, pred_contrib=True)
        pconf, rconf = self.policy_config, self.rules_config
        arrears = feats["arrears"].to_numpy()
        broken = (feats["promises_made_90d"] - feats["promises_kept_90d"]).to_numpy()
        offer = policy.staged_offer(feats["arrears_instalments"].to_numpy(), feats["days_past_due"].to_numpy(),
                                    broken, accounts["vulnerable"].to_numpy(dtype=bool), pconf)
        facts = rules.rule_facts(accounts, contacts, as_of, rconf)
        if history_unknown:
            facts.loc[accounts["account_id"].isin(history_unknown).to_numpy(), "history_known"] = False
        verdict = rules.evaluate(accounts, facts, as_of, rconf, proposed_offer=offer)
        lift = self.response.lookup(feats["employment"].to_numpy().astype(np.int64))
        ch_idx, win_idx, gain, value = policy.best_actions(
            lift, arrears, verdict.channel_allowed & ~verdict.suppress_all[:, None],
            policy.arm_offer_index(offer), pconf)
        channel = np.where(ch_idx >= 0, np.array(vocab.CONTACT_CHANNELS, dtype=object)[ch_idx], "none")
        offer = np.where(channel == "none", "none", offer)
        starts, ends = self._windows(accounts, verdict, win_idx, channel)
        local_today = [s is not None and s.date() == as_of.tz_convert(s.tzinfo).date() for s in starts]
        tier = policy.tiers(channel, verdict.held_by, verdict.require_human, verdict.suppress_all,
                            np.array(local_today, dtype=bool), value, pconf)
        reasons = top_reasons(contrib, X, self.feature_names, k=3)
        rows = pd.DataFrame({
            "account_id": accounts["account_id"].to_numpy(dtype=object),
            "as_of": as_of.isoformat(),
            "model_version": self.model_version,
            "cure_probability": cure_p,
            "priority": policy.priority(cure_p, arrears, value),
            "tier": tier,
            "channel": channel,
            "window_start": [s.isoformat() if s is not None else None for s in starts],
            "window_end": [e.isoformat() if e is not None else None for e in ends],
            "offer": offer,
            "template": [f"{o}_{c}_v1" if c != "none" else None for o, c in zip(offer, channel, strict=True)],
            "expected_gain": np.round(gain, 6),
            "reasons": [json.dumps(r, ensure_ascii=False) for r in reasons],
            "blocked": [json.dumps(b, ensure_ascii=False) for b in verdict.blocked],
            "propensity": np.full(len(feats), np.nan),
        })
        for col in TEXT_COLUMNS:  # pandas 3 would infer a string dtype with NaN for None
            rows[col] = pd.Series(rows[col].tolist(), dtype=object).where(rows[col].notna(), None)
        rows["decision_id"] = self._decision_ids(rows, X)
        rows = rows.sort_values(["priority", "account_id"], ascending=[False, True], kind="stable")
        return rows.loc[:, list(BATCH_COLUMNS)].reset_index(drop=True)

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
