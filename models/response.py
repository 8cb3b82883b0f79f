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

import lightgbm as lgb
import numpy as np
import pandas as pd

from models import vocab
from models.estimators import early_stopped_booster, path_contributions, predict

ARM_OFFERS = ("reminder", "instalment_plan")
MIN_ROWS = 50  # randomised decisions each sub-model needs at the least
ACTION_COLUMNS = ("action_channel", "action_window", "action_offer")


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
        acts = [(c, w, o) for c in vocab.CONTACT_CHANNELS for w in self.windows for o in ARM_OFFERS]
        return [*acts, ("none", "none", "none")]

    @property
    def none_index(self) -> int:
        return len(self.actions) - 1

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
        chans = (*vocab.CONTACT_CHANNELS, "none")
        wins = (*self.windows, "none")
        offers = (*ARM_OFFERS, "none")
        return np.array([[chans.index(c), wins.index(w), offers.index(o)] for c, w, o in self.actions],
                        dtype=np.float64)


class ResponseModel:
    """P(payment within K days | features at t, action), for every action of the space at once.

    By total probability, for a contact action a = (channel, window, offer):
        P(pay | x, a) = r(x, a) * c(x, a) + (1 - r(x, a)) * d(x, a)
    where r is the chance the contact reaches the customer (the outcome says so: reached, promise,
    refused, opened, clicked, replied; a delivered letter), c the chance of a payment when reached and
    d when not. Reach is observed on every attempt and depends strongly on lifestyle x channel x window;
    the offer moves what happens once reached. One assumption: an attempt that does not reach the
    customer changes nothing, so d(x) = P(pay | x, none) and the effect of a contact is
        gain(x, a) = r(x, a) * (c(x, a) - d(x)),
    with d learned on the unreached attempts (pooled over actions) and P(pay | x, none) = p0(x) on the
    hold-outs for the answer's baseline. Measured on the simulator, per-action d models, or d taken as
    p0, let two models' noise pick the action and lost 3 to 25% of the policy's value. Four LightGBM
    models, each on randomised decisions only, weighted by 1/propensity.

    When the logs cannot tell whether a contact reached the customer (`reached=None`: an e-mail experiment
    that records only the outcome), every contact counts as reaching: r = 1, there is no d, and
    P(pay | x, a) = c(x, a) is learned on every contact beside p0(x) on the hold-outs (two models).
    """

    business_as_usual_: dict | None = None  # training's summary of the BAU decisions (None: none considered)

    def __init__(self, lgbm_params: dict, space: ActionSpace, categorical: tuple[str, ...] = (),
                 random_state: int = 0):
        self.lgbm_params = lgbm_params
        self.space = space
        self.categorical = categorical
        self.random_state = random_state

    def _train(self, X: np.ndarray, codes: np.ndarray | None, y: np.ndarray, weight: np.ndarray) -> lgb.Booster:
        """One booster; its number of trees is chosen by early stopping on a seeded 15% slice, then it is
        refit on every row (the four sub-models see very different amounts of data)."""
        names = list(self.feature_names_) + (list(ACTION_COLUMNS) if codes is not None else [])
        cats = [c for c in self.categorical if c in self.feature_names_]
        cats += list(ACTION_COLUMNS) if codes is not None else []
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
        for rows, what in ((none, "hold-outs (channel none)"), (~none & reached, "contacts that reached"),
                           (~none & ~reached, "contacts that did not reach")):
            if rows.sum() < MIN_ROWS and (observed or what != "contacts that did not reach"):
                raise ValueError(f"the response model needs at least {MIN_ROWS} randomised {what}; "
                                 f"the logs hold {int(rows.sum())}")
        self.base_ = self._train(Xa[none], None, y[none], w[none])
        contact = ~none
        self.reach_ = self._train(Xa[contact], codes[contact], reached[contact], w[contact]) if observed else None
        hit, miss = contact & reached, contact & ~reached
        self.reached_ = self._train(Xa[hit], codes[hit], y[hit], w[hit])
        self.missed_ = self._train(Xa[miss], None, y[miss], w[miss]) if observed else None
        return self

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """(accounts, actions) chance of a payment within K days for every action of the space."""
        n, codes = len(X), self.space.codes()[:-1]
        if n == 0:
            return np.zeros((0, len(codes) + 1))
        rows = np.hstack([np.repeat(X, len(codes), axis=0), np.tile(codes, (n, 1))])
        c = predict(self.reached_, rows).reshape(n, len(codes))
        p0 = predict(self.base_, X).reshape(n, 1)
        if self.reach_ is None:  # reach not observed: every contact reaches, P(pay | x, a) = c(x, a)
            return np.hstack([np.clip(c, 0.0, 1.0), p0])
        r = predict(self.reach_, rows).reshape(n, len(codes))
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
