"""The one fitted object that serving loads: feature builder config, models, policy and rules config.

`ScoringBundle.decide` is the single scoring path: from prepared arrays (features.Prepared) at an as-of
time to one decision per overdue account. The nightly batch and Spark reach it through `score` (contract
tables -> `features.prepare` -> rows of the contract's batch output); the API through
`scoring.score_requests` (validated requests -> `features.prepare_requests` -> answers), with no pandas on
the way. A test holds the two front-ends equal, so a batch row and a real-time answer for the same account,
data and model are the same decision. Rows carry private `_`-prefixed columns the batch needs for the
day's call capacity (the best action without a call).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from models import calendar, policy, rules, vocab
from models.answers import nest
from models.contract import Portfolio
from models.estimators import CalibratedLGBM
from models.features import (
    FeatureConfig,
    Prepared,
    arrears_at,
    feature_matrix,
    feature_names,
    features_at,
    prepare,
)
from models.reasons import action_drivers, action_reason, top_reasons
from models.response import ARM_OFFERS, ResponseModel
from models.safe import SafePolicy

BATCH_COLUMNS = ("account_id", "as_of", "model_version", "cure_probability", "priority", "tier", "channel",
                 "window_start", "window_end", "offer", "template", "expected_gain", "reasons", "blocked",
                 "decision_id", "propensity")
TEXT_COLUMNS = ("account_id", "as_of", "model_version", "tier", "channel", "window_start", "window_end", "offer",
                "template", "reasons", "blocked")
ALT_COLUMNS = ("_value", "_alt_value", "_call_rank", "_alt_channel", "_alt_window_start", "_alt_window_end",
               "_alt_offer", "_alt_template", "_alt_gain", "_support", "_alt_support", "_alt_propensity")
ALT_TEXT_COLUMNS = ("_alt_channel", "_alt_window_start", "_alt_window_end", "_alt_offer", "_alt_template",
                    "_support", "_alt_support")
DECISION_NAMESPACE = uuid.UUID("6f1c2d1e-8a4b-4c1e-9a57-0c0ffee0cafe")


def _unit(digest: bytes) -> float:
    """A uniform in [0, 1) from 8 hash bytes (53 bits, like numpy's doubles)."""
    return (int.from_bytes(digest, "little") >> 11) / float(1 << 53)


def uniforms(account_ids: np.ndarray, as_of: pd.Timestamp, seed: int) -> tuple[np.ndarray, ...]:
    """Three uniforms per account (an experiment, the challenger or neither; the experiment's arm; the
    wording variant), seeded by account, as-of time and the params seed (reruns agree, and one account gets
    the same draws alone or in a portfolio)."""
    key = f"{seed}|{pd.Timestamp(as_of).isoformat()}|".encode()
    digests = [hashlib.blake2b(key + str(a).encode(), digest_size=24).digest() for a in account_ids]
    return tuple(np.array([_unit(d[i:i + 8]) for d in digests], dtype=np.float64) for i in (0, 8, 16))


def _plain(value: float) -> float | None:
    """A feature value for JSON: a python float, None for a missing one."""
    return None if math.isnan(value) else float(value)


class Configs(NamedTuple):
    """params.yaml as the frozen configs one scoring call reads."""

    features: FeatureConfig
    policy: policy.PolicyConfig
    rules: rules.RulesConfig
    windows: tuple[calendar.Window, ...]


@dataclass
class Decisions:
    """One decision per overdue account, highest priority first, as columns: python lists and arrays.
    `reasons` and `blocked` hold python lists (JSON text only in the batch frame); `X` the model inputs."""

    columns: dict[str, Any]
    X: np.ndarray
    feature_names: list[str]
    left_out: dict[str, str] = field(default_factory=dict)  # account id -> why it is not in the queue

    def __len__(self) -> int:
        return len(self.X)

    def inputs(self, i: int) -> dict[str, float | None]:
        """The model inputs of decision `i`, by name (for the decision log)."""
        return {name: _plain(value) for name, value in zip(self.feature_names, self.X[i].tolist(), strict=True)}

    def frame(self, keep_features: bool = False) -> pd.DataFrame:
        """The contract's batch rows plus the private capacity columns (and `_features` when asked)."""
        cols = dict(self.columns)
        cols["reasons"] = [json.dumps(r, ensure_ascii=False) for r in cols["reasons"]]
        cols["blocked"] = [json.dumps(b, ensure_ascii=False) for b in cols["blocked"]]
        for name in ("_support", "_alt_support"):
            cols[name] = [json.dumps(d) for d in cols[name]]
        rows = pd.DataFrame({name: cols[name] for name in (*BATCH_COLUMNS, *ALT_COLUMNS)})
        for col in (*TEXT_COLUMNS, *ALT_TEXT_COLUMNS):  # pandas 3 would infer a string dtype with NaN for None
            rows[col] = pd.Series(list(cols[col]), dtype=object)
        if keep_features:
            rows["_features"] = [self.inputs(i) for i in range(len(self))]
        return rows

    def answers(self) -> list[dict[str, Any]]:
        """The contract's real-time answers (the nested form of `frame`'s rows), in the same order."""
        return [nest({name: self.columns[name][i] for name in (*BATCH_COLUMNS, "_support")})
                for i in range(len(self))]


@dataclass
class ScoringBundle:
    """Everything a decision needs, fitted once and loaded unchanged by the API, the batch and Spark."""

    params: dict
    feature_names: list[str]
    cure: CalibratedLGBM
    response: ResponseModel | None   # None until randomised decisions are logged
    safe: SafePolicy | None = None   # the baseline and the validated departure margin (models.safe)
    baseline: Any = None             # models.baseline.Baseline on the cure model's training rows (judging only)
    run_id: str = ""
    model_version: str = "unregistered"
    metadata: dict = field(default_factory=dict)

    def with_cure_model_of(self, other: ScoringBundle) -> ScoringBundle:
        """This bundle's policy (response model, safe policy, params) on `other`'s cure model: what a retrain
        ships when its own cure model failed the quality gate but it learned about actions. The cure model
        brings what was made from its training rows (its three-feature baseline, the stale cure rate, the
        medians reasons compare with, its holdout start and the monitor's feature and cure-chance reference);
        the action mix the monitor expects stays this bundle's. The cure model reads the features only, so the
        two are independent at decision time; refused when the feature configurations differ."""
        if other.feature_config != self.feature_config or list(other.feature_names) != list(self.feature_names):
            raise ValueError("the two bundles compute different features: a cure model cannot move between them")
        cure_keys = ("stale_cure_rate", "usual_values", "cure_holdout_from")
        meta = {**self.metadata, **{k: other.metadata[k] for k in cure_keys if k in other.metadata},
                "cure_model_from": {"model_version": other.model_version, "run_id": other.run_id,
                                    "history_end": other.metadata.get("history_end")}}
        mine, theirs = self.metadata.get("reference"), other.metadata.get("reference")
        if mine is not None and theirs is not None:
            meta["reference"] = {**theirs, "actions": mine.get("actions", {})}
        return replace(self, cure=other.cure, baseline=other.baseline, metadata=meta)

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_params(self.params)

    @property
    def policy_config(self) -> policy.PolicyConfig:
        return policy.PolicyConfig.from_params(self.params["policy"])

    @property
    def rules_config(self) -> rules.RulesConfig:
        return rules.RulesConfig.from_params(self.params["rules"])

    def configs(self) -> Configs:
        """The params as frozen configs, read once per scoring call."""
        return Configs(self.feature_config, self.policy_config, self.rules_config,
                       calendar.parse_windows(self.params["calendar"]))

    def features(self, portfolio: Portfolio, as_of: pd.Timestamp) -> pd.DataFrame:
        """The point-in-time feature frame of every account (one row per account, contract order)."""
        config = self.feature_config
        return features_at(prepare(portfolio, config), as_of, config)

    def score(self, portfolio: Portfolio, as_of: pd.Timestamp, history_unknown: frozenset[str] = frozenset(),
              explore: float | None = None, keep_features: bool = False,
              contested: frozenset[str] = frozenset()) -> pd.DataFrame:
        """Batch rows for every account overdue at `as_of`, highest priority first.

        `history_unknown` names accounts whose contact history was not sent: the rules fail closed for them.
        `explore` overrides params' policy.explore (0 turns exploration off). `keep_features` adds a private
        `_features` column (the model inputs of each decision, for the decision log). `contested` names
        accounts with an open contest (R-CONTESTED: a person decides).
        """
        return self.score_prepared(prepare(portfolio, self.feature_config), as_of, history_unknown, explore,
                                   keep_features, contested)

    def score_prepared(self, prep: Prepared, as_of: pd.Timestamp, history_unknown: frozenset[str] = frozenset(),
                       explore: float | None = None, keep_features: bool = False,
                       contested: frozenset[str] = frozenset()) -> pd.DataFrame:
        """`score` for a portfolio already prepared (`features.prepare` or `features.prepare_arrow`)."""
        prep = mark_contested(prep, contested)
        known = ~np.isin(prep.account_id, list(history_unknown)) if history_unknown else np.ones(prep.n, bool)
        return self.decide(prep, as_of, known, explore).frame(keep_features)

    def _overdue(self, prep: Prepared, as_of: pd.Timestamp, conf: Configs
                 ) -> tuple[np.ndarray, Prepared, dict[str, np.ndarray], np.ndarray, dict[str, str]]:
        """The overdue accounts (arrears past the materiality thresholds): their positions in `prep`, their own
        part of it (`Prepared.take`: the batch's 3% overdue cost 3% of the features), their feature columns by
        name and the model's input matrix; and why each account with smaller arrears was left out."""
        names = feature_names(conf.features)
        arrears, in_instalments = arrears_at(prep, as_of)
        keep = policy.material(arrears, in_instalments, conf.policy)
        small = np.flatnonzero((arrears > 0) & ~keep)
        left_out = {str(prep.account_id[i]): policy.left_out_reason(float(arrears[i]), conf.policy) for i in small}
        rows = np.flatnonzero(keep)
        part = prep if len(rows) == prep.n else prep.take(rows)
        matrix = feature_matrix(part, as_of, conf.features)
        cols = {name: matrix[:, j] for j, name in enumerate(names)}
        return rows, part, cols, matrix[:, [names.index(n) for n in self.feature_names]], left_out

    @property
    def values_trusted(self) -> bool:
        """Whether the response model's values decide anything: there is one, and the safe policy departs from
        its baseline on them (a finite margin; no safe policy at all is a bundle from before it)."""
        return self.response is not None and (self.safe is None or math.isfinite(self.safe.margin))

    def _verdict(self, part: Prepared, cols: dict[str, np.ndarray], as_of: pd.Timestamp,
                 history_known: np.ndarray, conf: Configs) -> tuple[np.ndarray, rules.RuleResult]:
        """The staged offer and what the rules allow, for the overdue accounts (`part`, from `_overdue`)."""
        pconf, rconf = conf.policy, conf.rules
        broken = cols["promises_made_90d"] - cols["promises_kept_90d"]
        staged = policy.staged_offer(cols["arrears_instalments"], cols["days_past_due"], broken,
                                     part.flags["vulnerable"], pconf)
        facts = rules.prepared_facts(part, as_of, rconf, history_known)
        return staged, rules.evaluate_arrays(part.flags, facts, as_of, rconf, proposed_offer=staged)

    def constraints(self, portfolio: Portfolio, as_of: pd.Timestamp) -> dict[str, np.ndarray]:
        """For every account overdue at `as_of`: its id, arrears, features, and the channels and arms
        (reminder, arrangement) the rules and the staged offer allow (no channel for stale debt, as in
        `decide`); for evaluations."""
        as_of = pd.Timestamp(as_of).tz_convert("UTC")
        conf = self.configs()
        prep = prepare(portfolio, conf.features)
        _, part, cols, X, _ = self._overdue(prep, as_of, conf)
        staged, verdict = self._verdict(part, cols, as_of, np.ones(part.n, dtype=bool), conf)
        stale = policy.stale(cols["days_past_due"], conf.policy)
        return {"account_id": part.account_id, "arrears": cols["arrears"], "X": X,
                "channel_ok": _contact_allowed(verdict) & ~stale[:, None],
                "arm_ok": policy.arm_offers_allowed(staged, verdict.offer_allowed)}

    def gains(self, X: np.ndarray) -> np.ndarray:
        """(n, channels, windows, arms) chance of payment with each action minus with no contact
        (zero everywhere without a response model: nothing is known to beat doing nothing)."""
        n_win = len(calendar.parse_windows(self.params["calendar"]))
        shape = (len(X), len(vocab.CONTACT_CHANNELS), n_win, len(ARM_OFFERS))
        if self.response is None:
            return np.zeros(shape)
        p = self.response.predict_matrix(X)
        return (p[:, :-1] - p[:, -1:]).reshape(shape)

    def decide(self, prep: Prepared, as_of: pd.Timestamp, history_known: np.ndarray | None = None,
               explore: float | None = None) -> Decisions:
        """One decision per account overdue at `as_of`, highest priority first (ties by account id).

        `history_known` (default all True) is False for accounts whose contact history was not sent. The
        rows' `as_of` keeps the offset `as_of` was given in (the same instant; work is done in UTC).
        """
        stated = pd.Timestamp(as_of)
        as_of = stated.tz_convert("UTC")
        known = np.ones(prep.n, dtype=bool) if history_known is None else np.asarray(history_known, dtype=bool)
        conf = self.configs()
        eps = conf.policy.explore if explore is None else policy.explore_rate(explore)
        rows, part, cols, X, left_out = self._overdue(prep, as_of, conf)
        if not len(rows):
            return Decisions({name: [] for name in (*BATCH_COLUMNS, *ALT_COLUMNS)}, X, list(self.feature_names),
                             left_out)
        stale = policy.stale(cols["days_past_due"], conf.policy)
        cure_p, cure_why = self.cure.explain(X)  # one walk of the trees: the chance and its contributions
        cure_p = np.round(cure_p, 6)
        cure_p[stale] = round(float(self.metadata.get("stale_cure_rate", 0.0)), 6)
        staged, verdict = self._verdict(part, cols, as_of, known[rows], conf)
        ids = part.account_id
        u, v, w = uniforms(ids, as_of, int(self.params["seed"]))
        arm_ok = policy.arm_offers_allowed(staged, verdict.offer_allowed)
        channel_ok = _contact_allowed(verdict) & ~stale[:, None]
        prefs = None if self.safe is None else self.safe.preferences_of(cols, tuple(w.name for w in conf.windows))
        choice = policy.choose(self.gains(X), cols["arrears"], channel_ok, arm_ok, conf.policy, u, v, eps,
                               self.safe, prefs)
        zones = np.where(part.tz_valid, part.zone, None)
        main = self._action_columns(zones, verdict, staged, conf, choice.channel, choice.window, choice.arm, w)
        alt = self._action_columns(zones, verdict, staged, conf, *choice.alt[:3], w)
        out = self._columns(ids, cols, X, as_of, cure_p, cure_why, verdict, choice, main, conf)
        out["as_of"] = [stated.isoformat()] * len(ids)
        self._stale_track(out, stale, cols["days_past_due"], conf.policy)
        for key in ("channel", "window_start", "window_end", "offer", "template"):
            out[f"_alt_{key}"] = alt[key]
        out["_alt_gain"], out["_alt_value"], out["_value"] = np.round(choice.alt[3], 6), choice.alt[4], choice.value
        out["_call_rank"] = policy.call_rank(choice.value, choice.alt[4], np.asarray(out["priority"]),
                                             self.values_trusted)
        out["decision_id"] = self._decision_ids(out, X, conf.policy.version)
        order = np.lexsort((ids.astype(str), -out["priority"])) if len(ids) else np.empty(0, dtype=np.int64)
        ordered = {name: _take(values, order) for name, values in out.items()}
        return Decisions(ordered, X[order], list(self.feature_names), left_out)

    @staticmethod
    def _stale_track(out: dict[str, Any], stale: np.ndarray, days_past_due: np.ndarray,
                     pconf: policy.PolicyConfig) -> None:
        """Stale accounts leave the cure queue: their own tier (legal holds stay first), no automated action,
        priority 0, and the reason in words instead of the cure model's (its cure chance is the stale rate)."""
        tiers = np.array(out["tier"], dtype=object)
        track = stale & (tiers != vocab.HOLD_LEGAL)
        tiers[track] = policy.stale_tier(days_past_due[track], pconf)
        out["tier"] = tiers.tolist()
        out["priority"] = np.where(stale, 0.0, out["priority"])
        for i in np.flatnonzero(stale):
            out["reasons"][i] = [policy.stale_reason(float(days_past_due[i]), pconf)]

    def _action_columns(self, zones, verdict, staged, conf, channel_idx, window_idx, arm_idx, w) -> dict[str, list]:
        """Channel, contact window, offer and template of chosen action indices (-1 = no contact); the
        template's wording variant is drawn uniformly (`w`) among the channel's registered variants."""
        channel = np.where(channel_idx >= 0, np.array(vocab.CONTACT_CHANNELS, dtype=object)[channel_idx], "none")
        offer = np.where(channel == "none", "none", policy.final_offer(staged, arm_idx))
        starts, ends = self._windows(zones, verdict, window_idx, channel, conf)
        variants = conf.policy.templates
        template = [f"{o}_{c}_{policy.variant(variants, c, x)}" if c != "none" else None
                    for o, c, x in zip(offer, channel, w, strict=True)]
        return {"channel": channel.tolist(), "offer": offer.tolist(), "template": template,
                "window_start": [s.isoformat() if s is not None else None for s in starts],
                "window_end": [e.isoformat() if e is not None else None for e in ends], "_starts": starts}

    def _columns(self, ids, cols, X, as_of, cure_p, cure_why, verdict, choice, main, conf) -> dict[str, Any]:
        """The contract's batch columns (decision id added by the caller), reasons and blocked as lists."""
        local_today = np.array([s is not None and s.date() == as_of.tz_convert(s.tzinfo).date()
                                for s in main["_starts"]], dtype=bool)
        channel = np.array(main["channel"], dtype=object)
        tier = policy.tiers(channel, verdict.held_by, verdict.require_human, verdict.suppress_all, local_today,
                            choice.value, conf.policy)
        reasons = top_reasons(cure_why, X, self.feature_names, k=3,
                              usual=self.metadata.get("usual_values"), currency=conf.policy.currency)
        windows = [w.name for w in conf.windows]
        drivers = self._drivers(X, choice)
        steps = self._steps(cols)
        for i, items in enumerate(reasons):
            items.append(action_reason(channel[i], windows[choice.window[i]] if choice.window[i] >= 0 else None,
                                       float(choice.gain[i]), bool(choice.explored[i]), drivers[i],
                                       self._basis(choice, i, steps[i], conf.policy.challenger),
                                       self.response is not None))
        n = len(ids)
        return {
            "account_id": ids.tolist(), "as_of": [as_of.isoformat()] * n, "model_version": [self.model_version] * n,
            "cure_probability": cure_p, "priority": policy.priority(cure_p, cols["arrears"], choice.value),
            "tier": tier.tolist(), "channel": main["channel"], "window_start": main["window_start"],
            "window_end": main["window_end"], "offer": main["offer"], "template": main["template"],
            "expected_gain": np.round(choice.gain, 6), "reasons": reasons, "blocked": verdict.blocked,
            "propensity": np.round(choice.propensity, 6), "_support": policy.support_lists(choice.support, windows),
            **self._alt_support(choice, channel, windows),
        }

    @staticmethod
    def _alt_support(choice, channel: np.ndarray, windows: list[str]) -> dict[str, Any]:
        """For a call: the distribution after the day's capacity moved it to the best other action, and that
        action's chance in it (what the batch records for a moved call: models.queue); [] and NaN for any other
        action."""
        calls = np.flatnonzero(channel == "phone")
        out: list[list] = [[] for _ in range(len(channel))]
        chance = np.full(len(channel), np.nan)
        if choice.support is not None and len(calls):
            alt = tuple(a[calls] for a in choice.alt[:3])
            moved = policy.capacity_moved(tuple(a[calls] for a in choice.support), alt, len(windows))
            for i, row in zip(calls.tolist(), policy.support_lists(moved, windows), strict=True):
                out[i] = row
            chance[calls] = policy.chance_of(moved, alt, len(windows))
        return {"_alt_support": out, "_alt_propensity": np.round(chance, 6)}

    def _steps(self, cols: dict[str, np.ndarray]) -> list[str | None]:
        """Each account's playbook step in words (None without a playbook baseline, or before its first step)."""
        book = None if self.safe is None else self.safe.playbook
        if book is None:
            return [None] * len(cols["days_past_due"])
        step = book.step_of(cols["days_past_due"], cols["arrears_instalments"])
        return [f"step '{book.steps[s].name}'" if s >= 0 else None for s in step.tolist()]

    def _basis(self, choice, i: int, step: str | None = None, challenger: float = 0.0) -> str | None:
        """Why the action is the baseline's, the challenger's (served to the share `challenger`) or the model's
        own (None without a safe policy)."""
        if self.safe is None or choice.departed is None or choice.explored[i]:
            return None
        if choice.challenged is not None and choice.challenged[i]:
            return (f"the challenger: {self.safe.evidence.get('best_single_text', 'the learned best single action')}"
                    f" for everyone (the best single action the data favour so far), served at random to "
                    f"{challenger:.0%} of the accounts instead of "
                    f"{self.safe.evidence.get('baseline_text', 'the baseline')} until the evidence decides "
                    f"between them (propensity recorded)")
        if choice.departed[i]:
            return f"the models expect it to beat the baseline by more than JPY {self.safe.margin:,.0f}"
        if step is not None:
            return (f"the team's playbook, {step}" + (" (no response model yet)" if self.response is None else
                                                      "" if math.isfinite(self.safe.margin) else
                                                      ", as the evidence to depart from it is not yet enough"))
        return ("the baseline action: " + self.safe.evidence.get("baseline_text", "the best single action")
                + (", as the evidence to depart from it is not yet enough" if math.isinf(self.safe.margin)
                   else ", as nothing else is expected to beat it by the validated margin"))

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

    def _windows(self, zones: np.ndarray, verdict, win_idx: np.ndarray, channel: np.ndarray, conf: Configs):
        """R-HOURS: the chosen window's next occurrence in local time, from the rules' earliest instant."""
        windows = conf.windows
        starts, ends, spans = [], [], {}  # one window per distinct (window, earliest instant, zone)
        not_before = verdict.not_before.astype(np.int64)
        for i, w in enumerate(win_idx.tolist()):
            span = None
            if channel[i] != "none" and w >= 0 and zones[i] is not None:  # no clock: no window (fail closed)
                key = (w, int(not_before[i]), zones[i])
                if key not in spans:
                    spans[key] = rules.contact_window(windows[w].name, pd.Timestamp(key[1], tz="UTC"), zones[i],
                                                      conf.rules, windows)
                span = spans[key]
            starts.append(span[0] if span else None)
            ends.append(span[1] if span else None)
        return starts, ends

    def _decision_ids(self, out: dict[str, Any], X: np.ndarray, policy_version: str) -> list[str]:
        """Deterministic ids: the same account, inputs, as-of, model and policy give the same id."""
        salt = f"{self.model_version}|{policy_version}"
        digests = [hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=8).hexdigest() for x in X]
        return [str(uuid.uuid5(DECISION_NAMESPACE, f"{a}|{t}|{salt}|{d}|{c}|{w}"))
                for a, t, d, c, w in zip(out["account_id"], out["as_of"], digests, out["channel"],
                                         out["window_start"], strict=True)]


def mark_contested(prep: Prepared, contested: frozenset[str] | set[str]) -> Prepared:
    """`prep` with the R-CONTESTED flag set for the named accounts (no flag at all when none is named)."""
    if contested:
        prep.flags[rules.CONTESTED] = np.isin(prep.account_id, list(contested))
    return prep


def _contact_allowed(verdict: rules.RuleResult) -> np.ndarray:
    """(n, channels) where an automatic contact may go: what the rules allow, nothing under a hold, and
    nothing where a person must decide first (legal review, a missing clock or contact history)."""
    return verdict.channel_allowed & ~(verdict.suppress_all | verdict.require_human)[:, None]


def _take(values: Any, order: np.ndarray) -> Any:
    """Reorder a column: arrays by fancy indexing, lists element by element."""
    if isinstance(values, np.ndarray):
        return values[order]
    return [values[i] for i in order.tolist()]
