"""The team's own rule, estimated: how likely the logged action was where no propensity was logged.

Business-as-usual (BAU) decisions are chosen by a rule ("SMS on day 3, a call from day 10") that logs no
propensity. They still carry information wherever the rule was not deterministic given what we see (rules
change, collectors deviate, consent and capacity vary). To learn from them soundly (Crump et al. 2009,
"Dealing with limited overlap"; the cross-fitted nuisances of Chernozhukov et al. 2018, as EconML's DRLearner
and Open Bandit Pipeline's propensity estimators do):

1. **Estimate** the rule's chance of each logged action, factorised by the chain rule,
   P(channel | x) x P(window | x, channel) x P(offer | x, channel, window), one LightGBM classifier per
   factor, on the decision-time features plus the account's consent and hold flags and the decision day
   (what a rule reads). **Cross-fitted**: folds by account; every decision's estimate comes from models that
   never saw that account (out of fold only).
2. **Trust**: each factor's out-of-fold probabilities must be calibrated (per class, the expected
   calibration error over 10 bins, the worst class counting) within `max_calibration_error`; otherwise no
   BAU decision is used.
3. **Overlap**: a decision is used only where its estimated propensity lies in
   [`min_propensity`, `max_propensity`]: below the floor the weight 1/p would be huge and rest on a tiny,
   uncertain estimate; above the ceiling the rule decided (nothing else could have happened there, so the
   decision says nothing about what another action would have done). Weights are 1/p, at most 1/floor.

`estimate` returns, per BAU decision, the estimated propensity, whether it is used and why not, and a summary
the training log and the response model carry. Pure numpy and LightGBM; nothing here is used in serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.estimators import booster_params

USED, BELOW_FLOOR, RULE_DECIDED, UNTRUSTED, TOO_FEW = (
    "used", "below the overlap floor", "the rule decided (above the ceiling)", "estimate not calibrated",
    "too few decisions to estimate the rule")
FACTORS = ("channel", "window", "offer")
MIN_DECISIONS = 200  # BAU decisions (and 2 x folds accounts) below which the rule is not estimated


@dataclass(frozen=True)
class BAUConfig:
    """params.yaml `response.business_as_usual`."""

    use: bool = False
    n_folds: int = 3
    min_propensity: float = 0.05
    max_propensity: float = 0.95
    max_calibration_error: float = 0.03
    lgbm: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict) -> BAUConfig:
        raw = dict(params.get("response", {}).get("business_as_usual") or {})
        conf = cls(**raw)
        if not 0.0 < conf.min_propensity < conf.max_propensity <= 1.0:
            raise ValueError("params response.business_as_usual needs 0 < min_propensity < max_propensity <= 1, "
                             f"not {conf.min_propensity} and {conf.max_propensity}")
        if int(conf.n_folds) < 2:
            raise ValueError(f"params response.business_as_usual.n_folds must be at least 2, not {conf.n_folds}")
        return conf


def folds_by_account(account_ids: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each row: the accounts in a seeded random order, dealt round-robin (one account, one fold)."""
    accounts, inverse = np.unique(np.asarray(account_ids).astype(str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(accounts))
    fold_of_account = np.empty(len(accounts), dtype=np.int64)
    fold_of_account[order] = np.arange(len(accounts)) % n_folds
    return fold_of_account[inverse]


def _classifier(X: np.ndarray, y: np.ndarray, k: int, lgbm: dict, seed: int, names: list[str],
                categorical: list[str]) -> lgb.Booster | None:
    """One classifier of y in 0..k-1 (softmax for k > 2), its trees chosen by early stopping on a seeded 15%
    slice and refit on every row; None when only one class occurs (the factor is then certain)."""
    if k < 2:
        return None
    params, rounds = booster_params(lgbm, seed, default_rounds=200)
    params.update({"objective": "multiclass", "num_class": k} if k > 2 else {"objective": "binary"})
    valid = np.random.default_rng(seed).random(len(y)) < 0.15

    def data(rows: np.ndarray, reference=None) -> lgb.Dataset:
        return lgb.Dataset(X[rows], label=y[rows], feature_name=names, categorical_feature=categorical,
                           free_raw_data=False, reference=reference)

    fit_set = data(~valid)
    probe = lgb.train(params, fit_set, num_boost_round=rounds, valid_sets=[data(valid, fit_set)],
                      callbacks=[lgb.early_stopping(20, verbose=False)])
    return lgb.train(params, data(np.ones(len(y), dtype=bool)), num_boost_round=max(probe.best_iteration or rounds, 1))


def _proba(booster: lgb.Booster | None, X: np.ndarray, k: int) -> np.ndarray:
    """(n, k) class probabilities (all mass on the one class when the factor is certain)."""
    if booster is None:
        return np.ones((len(X), 1))
    p = booster.predict(X)
    return np.column_stack([1.0 - p, p]) if k == 2 else p


def calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """The worst class's expected calibration error: per class, over 10 equal-width bins of its predicted
    probability, the count-weighted mean of |mean predicted - share observed|."""
    worst = 0.0
    for c in range(proba.shape[1]):
        p, hit = proba[:, c], (y == c).astype(float)
        b = np.minimum((p * bins).astype(np.int64), bins - 1)
        n = np.bincount(b, minlength=bins)
        gap = np.abs(np.bincount(b, p, bins) - np.bincount(b, hit, bins))  # n x |mean p - share| per bin
        worst = max(worst, float(gap.sum() / max(n.sum(), 1)))
    return worst


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    levels, codes = np.unique(values.astype(str).to_numpy(), return_inverse=True)
    return codes.astype(np.int64), len(levels)


def out_of_fold(X: pd.DataFrame, actions: pd.DataFrame, folds: np.ndarray, lgbm: dict, seed: int,
                categorical: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, float]]:
    """Out-of-fold estimated propensity of each row's logged action (channel, window, offer columns of
    `actions`) and each factor's calibration error on the held-out folds. The window model sees the channel,
    the offer model the channel and the window (the chain rule)."""
    base = X.to_numpy(dtype=np.float64)
    codes = [_codes(actions[f]) for f in FACTORS]
    propensity = np.ones(len(X))
    errors = {}
    for i, factor in enumerate(FACTORS):
        y, k = codes[i]
        data = np.hstack([base, np.column_stack([c for c, _ in codes[:i]])]) if i else base
        names = list(X.columns) + [f"logged_{f}" for f in FACTORS[:i]]
        cats = [c for c in categorical if c in X.columns] + [f"logged_{f}" for f in FACTORS[:i]]
        oof = np.zeros((len(X), max(k, 1)))
        for fold in np.unique(folds):
            test = folds == fold
            model = _classifier(data[~test], y[~test], k, lgbm, seed + i, names, cats)
            oof[test] = _proba(model, data[test], k)
        propensity *= oof[np.arange(len(X)), y]
        errors[factor] = calibration_error(oof, y)
    return propensity, errors


def estimate(X: pd.DataFrame, actions: pd.DataFrame, account_ids: np.ndarray, conf: BAUConfig, seed: int,
             categorical: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """Per BAU decision: `propensity` (estimated out of fold, NaN when not estimated), `used`, and `why`
    (USED or the reason it is not); and a summary (counts by reason, calibration errors, the bounds)."""
    n = len(X)
    out = pd.DataFrame({"propensity": np.full(n, np.nan), "used": np.zeros(n, dtype=bool),
                        "why": np.full(n, TOO_FEW, dtype=object)}, index=X.index)
    summary = {"decisions": n, "min_propensity": conf.min_propensity, "max_propensity": conf.max_propensity,
               "calibration_error": {}, "max_calibration_error": conf.max_calibration_error}
    if n < MIN_DECISIONS or len(np.unique(np.asarray(account_ids).astype(str))) < 2 * conf.n_folds:
        return out, _count(out, summary)
    folds = folds_by_account(account_ids, int(conf.n_folds), seed)
    p, errors = out_of_fold(X, actions, folds, conf.lgbm, seed, categorical)
    summary["calibration_error"] = errors
    out["propensity"] = p
    trusted = bool(max(errors.values()) <= conf.max_calibration_error)
    out["why"] = np.where(not trusted, UNTRUSTED, np.where(p < conf.min_propensity, BELOW_FLOOR,
                                                       np.where(p > conf.max_propensity, RULE_DECIDED, USED)))
    out["used"] = out["why"] == USED
    return out, _count(out, summary)


def _count(out: pd.DataFrame, summary: dict) -> dict:
    summary["used"] = int(out["used"].sum())
    summary["dropped"] = {str(k): int(v) for k, v in out.loc[~out["used"], "why"].value_counts().items()}
    return summary
