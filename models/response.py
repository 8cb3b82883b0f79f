"""Response to an action: the chance of a payment within K days after each channel x window x offer.

`ResponseModel` is one LightGBM classifier over the account's point-in-time features plus the action
(channel, local time window, offer); "no contact" (the experiments' hold-outs) is an action too, so the
effect of an action is its predicted chance minus the chance with no contact (an S-learner over 41
actions at once, not one treatment against control).

Learning from logs: decisions with a propensity, each weighted by 1/propensity (normalised to mean 1), so
every action's examples stand for the whole population the logging policy drew from, whatever the consent
mix that limited the draw. The propensity is the logged one for randomised decisions (experiments,
exploration); business-as-usual decisions (chosen by rule, none logged) are added by training only where
the rule's estimated propensity passes the overlap and calibration checks (models.logging_policy,
params response.business_as_usual), and `business_as_usual_` records how many were used. A decision
with no propensity is left out. With no propensity anywhere the model cannot be fitted and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import lightgbm as lgb
import numpy as np
import pandas as pd

from models import vocab
from models.estimators import early_stopped_booster, path_contributions, predict

ARM_OFFERS = ("reminder", "instalment_plan")
MIN_ROWS = 50  # randomised decisions each sub-model needs at the least
ACTION_COLUMNS = ("action_channel", "action_window", "action_offer")
UNREACHED = ("none", "per_channel", "auto")  # params response.unreached: what an unreached attempt does


def _log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row log loss of outcomes y under chances p (clipped away from 0 and 1)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def template_offer(templates: pd.Series, prefixes: dict[str, str]) -> pd.Series:
    """The offer a logged template carried (templates start with a known prefix), else None."""
    out = pd.Series([None] * len(templates), index=templates.index, dtype=object)
    text = templates.astype(object).where(templates.notna(), "")
    for prefix, offer in sorted(prefixes.items(), key=lambda kv: -len(kv[0])):
        hit = text.map(lambda s, p=prefix: str(s).startswith(p)) & out.isna()
        out[hit] = offer
    return out


@dataclass(frozen=True)
class ActionSpace:
    """Every action: (channel, window, offer) for 5 channels x windows x 2 arm offers, then no contact."""

    windows: tuple[str, ...]

    @property
    def actions(self) -> list[tuple[str, str, str]]:
        return list(_actions(self.windows))

    @property
    def none_index(self) -> int:
        return len(_actions(self.windows)) - 1

    def index(self, channel: np.ndarray, window: np.ndarray, offer: np.ndarray) -> np.ndarray:
        """Action index of each logged (channel, window, offer); -1 when not an action of the space."""
        lookup = {a: i for i, a in enumerate(self.actions)}
        none = np.asarray(channel, dtype=object) == "none"
        keys = zip(channel, window, offer, strict=True)
        idx = np.array([lookup.get(k, -1) for k in keys], dtype=np.int64)
        idx[none] = self.none_index
        return idx

    def codes(self) -> np.ndarray:
        """(actions, 3) integer codes of channel, window and offer, the model's action columns."""
        return _codes(self.windows).copy()


@lru_cache(maxsize=8)
def _actions(windows: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """The action space of these windows (built once per windows: real-time scoring asks for it each request)."""
    acts = [(c, w, o) for c in vocab.CONTACT_CHANNELS for w in windows for o in ARM_OFFERS]
    return (*acts, ("none", "none", "none"))


@lru_cache(maxsize=8)
def _codes(windows: tuple[str, ...]) -> np.ndarray:
    chans = (*vocab.CONTACT_CHANNELS, "none")
    wins = (*windows, "none")
    offers = (*ARM_OFFERS, "none")
    return np.array([[chans.index(c), wins.index(w), offers.index(o)] for c, w, o in _actions(windows)],
                    dtype=np.float64)


class ResponseModel:
    """P(payment within K days | features at t, action), for every action of the space at once.

    By total probability, for a contact action a = (channel, window, offer):
        P(pay | x, a) = r(x, a) * c(x, a) + (1 - r(x, a)) * d(x, a)
    where r is the chance the contact reaches the customer (the outcome says so: reached, promise,
    refused, opened, clicked, replied; a delivered letter), c the chance of a payment when reached and
    d when not. Reach is observed on every attempt and depends strongly on lifestyle x channel x window;
    the offer moves what happens once reached. Two structures for d (`unreached_`):

    - "none": an attempt that does not reach the customer changes nothing, so the effect of a contact is
          gain(x, a) = r(x, a) * (c(x, a) - d(x)),
      with d learned on the unreached attempts (pooled over actions) and P(pay | x, none) = p0(x) on the
      hold-outs for the answer's baseline. Measured on the simulator where it holds, per-action d models,
      or d taken as p0 in the gain, let two models' noise pick the action and lost 3 to 25% of the policy's
      value. With fewer than MIN_ROWS hold-outs p0 is d itself (`p0_from_` says which): under this
      structure an unreached attempt is a no contact, and the gains, hence the decisions, never read p0. A
      playbook that contacts every overdue account draws hold-outs only in its experiments (about one a
      week on a 5,000-account book), so requiring 50 kept the closed loop from ever fitting the model.
    - "per_channel": an unreached attempt may still work (an unanswered text is read, a voicemail heard),
      by channel: P(pay | x, a) = r(x, a) * c(x, a) + (1 - r(x, a)) * d(x, channel), the total
      probability with d learned on the unreached attempts with their channel (shared over windows and
      offers, so five levels, not forty).

    Which one holds is a hypothesis tested on the data (`choose_unreached`, on held-out randomised
    decisions): the residual of "none" per channel always, and with `unreached="auto"` "per_channel" is
    used only where it predicts the held-out outcomes better with a lower confidence bound above zero.
    Measured on four simulated worlds (benchmarks/nba_presets.py --unreached-compare), "per_channel" made
    the gains worse everywhere, also where unreached texts do work: its gain rests on p0, learned on the
    few hold-outs, while "none" differences two models of plentiful contacts. So "none" is the default.
    LightGBM models, each on randomised decisions only, weighted by 1/propensity.

    When the logs cannot tell whether a contact reached the customer (`reached=None`: an e-mail experiment
    that records only the outcome), every contact counts as reaching: r = 1, there is no d, and
    P(pay | x, a) = c(x, a) is learned on every contact beside p0(x) on the hold-outs (two models).
    """

    business_as_usual_: dict | None = None  # training's summary of the BAU decisions (None: none considered)
    unreached_: str = "none"  # the structure in use (bundles from before the choice existed: "none")
    missed_channel_: lgb.Booster | None = None  # d(x, channel), for "per_channel"
    unreached_evidence_: dict | None = None  # choose_unreached's test (None: not tested)
    p0_from_: str = "the hold-outs"  # what p0(x), the chance with no contact, was learned on

    def __init__(self, lgbm_params: dict, space: ActionSpace, categorical: tuple[str, ...] = (),
                 random_state: int = 0, unreached: str = "none"):
        if unreached not in UNREACHED:
            raise ValueError(f"params response.unreached must be one of {', '.join(UNREACHED)}, not {unreached!r}")
        self.lgbm_params = lgbm_params
        self.space = space
        self.categorical = categorical
        self.random_state = random_state
        self.unreached = unreached

    def _train(self, X: np.ndarray, codes: np.ndarray | None, y: np.ndarray, weight: np.ndarray,
               columns: tuple[str, ...] = ACTION_COLUMNS) -> lgb.Booster:
        """One booster; its number of trees is chosen by early stopping on a seeded 15% slice, then it is
        refit on every row (the sub-models see very different amounts of data). `codes`: the action columns
        named `columns` (None: features only)."""
        names = list(self.feature_names_) + (list(columns) if codes is not None else [])
        cats = [c for c in self.categorical if c in self.feature_names_]
        cats += list(columns) if codes is not None else []
        data = X if codes is None else np.hstack([X, codes])
        return early_stopped_booster(data, y, weight, self.lgbm_params, self.random_state, cats, names)

    def fit(self, X: pd.DataFrame, action: np.ndarray, y: np.ndarray, propensity: np.ndarray,
            reached: np.ndarray | None) -> ResponseModel:
        """X: features at decision time; action: index into the space; y: paid within K days;
        propensity: logged, in (0, 1]; reached: the contact reached the customer (None: not observed)."""
        ok = np.isfinite(propensity) & (propensity > 0)
        if not ok.any():
            raise ValueError("the response model needs logged decisions with a propensity; none were found")
        observed = reached is not None
        reached = np.asarray(reached) if observed else np.ones(len(y), dtype=bool)
        X, action, y, reached, w = (X[ok], action[ok], y[ok], reached[ok].astype(bool), 1.0 / propensity[ok])
        self.feature_names_ = list(X.columns)
        Xa, codes = X.to_numpy(dtype=np.float64), self.space.codes()[action]
        none = action == self.space.none_index
        # Under "none" an unreached attempt is a no contact, so p0 can be d: the gains r (c - d) never read p0
        # (it only fills the no-contact column), and a playbook that contacts everyone draws few hold-outs
        # (a 5,000-account book's experiments draw about one a week: 50 take over a year).
        p0_unreached = observed and self.unreached == "none" and none.sum() < MIN_ROWS
        for rows, what in ((none, "hold-outs (channel none)"), (~none & reached, "contacts that reached"),
                           (~none & ~reached, "contacts that did not reach")):
            needed = observed or what != "contacts that did not reach"
            if what.startswith("hold-outs") and p0_unreached:
                needed = False
            if rows.sum() < MIN_ROWS and needed:
                raise ValueError(f"the response model needs at least {MIN_ROWS} randomised {what}; "
                                 f"the logs hold {int(rows.sum())}")
        contact = ~none
        self.reach_ = self._train(Xa[contact], codes[contact], reached[contact], w[contact]) if observed else None
        hit, miss = contact & reached, contact & ~reached
        self.reached_ = self._train(Xa[hit], codes[hit], y[hit], w[hit])
        self.missed_ = self._train(Xa[miss], None, y[miss], w[miss]) if observed else None
        self.base_ = self.missed_ if p0_unreached else self._train(Xa[none], None, y[none], w[none])
        self.p0_from_ = (f"the {int(miss.sum()):,} unreached contacts ({int(none.sum())} hold-outs, fewer than "
                         f"{MIN_ROWS})" if p0_unreached else f"the {int(none.sum()):,} hold-outs")
        per_channel = observed and self.unreached != "none"
        self.missed_channel_ = (self._train(Xa[miss], codes[miss][:, :1], y[miss], w[miss], ACTION_COLUMNS[:1])
                                if per_channel else None)
        self.unreached_ = "per_channel" if per_channel and self.unreached == "per_channel" else "none"
        return self

    def choose_unreached(self, X: np.ndarray, action: np.ndarray, y: np.ndarray, propensity: np.ndarray,
                         z: float = 1.645) -> dict:
        """Test, on held-out randomised decisions, whether an unreached attempt works differently by channel.

        Each held-out contact's outcome is predicted by total probability, r c + (1 - r) d, twice: with d
        pooled over channels and with d by channel. Per decision the difference of the two log losses
        (weighted by 1/propensity, normalised to mean 1); "per_channel" is chosen only where the mean
        improvement's one-sided lower confidence bound (mean - z x se) is above zero, else "none" (the
        simpler model, whose gains do not rest on the few hold-outs' p0, keeps its place until the data
        reject it). Both sides share r and c, so the test reads d alone. Whatever the params, the evidence
        gives per channel the weighted mean of (outcome - the "none" structure's prediction) on the held-out
        contacts: what the assumption leaves unexplained (time drift moves every channel alike; an unreached
        attempt that works moves its channel alone). The test runs only with `unreached="auto"`.
        Sets `unreached_` and returns the evidence (also `unreached_evidence_`)."""
        ok = (action != self.space.none_index) & np.isfinite(propensity) & (propensity > 0)
        if self.reach_ is None or ok.sum() < MIN_ROWS:
            why = "not tested: " + ("the logs do not say whether a contact reached" if self.reach_ is None else
                                    f"{int(ok.sum())} held-out contacts (at least {MIN_ROWS} needed)")
            self.unreached_evidence_ = {"chosen": self.unreached_, "decisions": int(ok.sum()), "why": why}
            return self.unreached_evidence_
        X, action, y, w = X[ok], action[ok], np.asarray(y, dtype=np.float64)[ok], 1.0 / propensity[ok]
        w = w / w.mean()
        codes = self.space.codes()[action]
        rows = np.hstack([X, codes])
        r, c, d_pooled = predict(self.reach_, rows), predict(self.reached_, rows), predict(self.missed_, X)
        p_none = np.clip(predict(self.base_, X) + r * (c - d_pooled), 0.0, 1.0)  # "none" for the taken action
        channel = np.array([self.space.actions[a][0] for a in action], dtype=object)
        residual = {str(ch): float(np.average(y[channel == ch] - p_none[channel == ch], weights=w[channel == ch]))
                    for ch in vocab.CONTACT_CHANNELS if (channel == ch).any()}
        self.unreached_evidence_ = {"chosen": self.unreached_, "decisions": int(len(X)),
                                    "residual_by_channel": residual}
        if self.unreached != "auto" or self.missed_channel_ is None:
            self.unreached_evidence_["why"] = f"not tested: params response.unreached is {self.unreached}"
            return self.unreached_evidence_
        d_channel = predict(self.missed_channel_, np.hstack([X, codes[:, :1]]))
        loss_pooled = _log_loss(y, r * c + (1.0 - r) * d_pooled)
        loss_channel = _log_loss(y, r * c + (1.0 - r) * d_channel)
        gain = w * (loss_pooled - loss_channel)
        mean, se = float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(len(gain)))
        self.unreached_ = "per_channel" if mean - z * se > 0 else "none"
        self.unreached_evidence_.update({
            "chosen": self.unreached_, "log_loss_pooled": float(np.average(loss_pooled, weights=w)),
            "log_loss_per_channel": float(np.average(loss_channel, weights=w)),
            "improvement": mean, "se": se, "lcb": mean - z * se})
        return self.unreached_evidence_

    def predict_matrix(self, X: np.ndarray, unreached: str | None = None) -> np.ndarray:
        """(accounts, actions) chance of a payment within K days for every action of the space, under the
        chosen structure (`unreached`, default `unreached_`)."""
        n, codes = len(X), self.space.codes()[:-1]
        if n == 0:
            return np.zeros((0, len(codes) + 1))
        rows = np.hstack([np.repeat(X, len(codes), axis=0), np.tile(codes, (n, 1))])
        c = predict(self.reached_, rows).reshape(n, len(codes))
        p0 = predict(self.base_, X).reshape(n, 1)
        if self.reach_ is None:  # reach not observed: every contact reaches, P(pay | x, a) = c(x, a)
            return np.hstack([np.clip(c, 0.0, 1.0), p0])
        r = predict(self.reach_, rows).reshape(n, len(codes))
        if (unreached or self.unreached_) == "per_channel" and self.missed_channel_ is not None:
            channels, which = np.unique(codes[:, 0], return_inverse=True)  # d depends on the channel only
            d = predict(self.missed_channel_, np.hstack([np.repeat(X, len(channels), axis=0),
                                                         np.tile(channels[:, None], (n, 1))]))
            d = d.reshape(n, len(channels))[:, which]
            return np.hstack([np.clip(r * c + (1.0 - r) * d, 0.0, 1.0), p0])
        return np.hstack([np.clip(p0 + r * (c - predict(self.missed_, X)[:, None]), 0.0, 1.0), p0])

    def contributions(self, X: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Reach-model path contributions of each account's row with its action (features, action columns, bias);
        zeros for no contact. What makes a contact work for this customer is mostly whether it reaches them."""
        out = np.zeros((len(X), X.shape[1] + len(ACTION_COLUMNS) + 1))
        contact = action != self.space.none_index
        if contact.any():
            rows = np.hstack([X[contact], self.space.codes()[action[contact]]])
            booster = self.reached_ if self.reach_ is None else self.reach_
            out[contact] = path_contributions(booster)(rows)
        return out
