"""Off-policy evaluation: what a new contact policy would have earned, estimated from logged decisions.

Per logged decision i (a context x_i, the logged action a_i, its reward r_i):
- reward: r_i, e.g. 1 if a payment came within 7 days, or a money value;
- logged_propensity: mu(a_i | x_i), the chance the logging policy (experiment, exploration) took a_i, in (0, 1];
- target_prob: pi(a_i | x_i), the chance the new policy takes that same action, in [0, 1] (1/0 when it is
  deterministic);
- q_logged: a reward model's prediction q(x_i, a_i) for the logged action;
- q_target: the model's expected reward under the new policy, sum over a of pi(a | x_i) q(x_i, a).

Estimators (w_i = pi / mu, the importance weight):
- ips: mean of w_i r_i. Unbiased whenever mu > 0 wherever pi > 0; the variance grows with the weights.
- snips: sum w_i r_i / sum w_i. Slightly biased, usually lower variance; invariant to a reward shift.
- direct: mean of q_target. Low variance, but exactly as biased as the reward model.
- doubly_robust: mean of q_target + w_i (r_i - q_logged). Unbiased like IPS whatever the model (the model's
  error is corrected by the weighted residual), and with lower variance the better the model explains r.
- logging_value: mean reward, the logging policy's own (on-policy) value, the baseline to beat.

Intervals: normal approximation, value +- z * sd(influence terms) / sqrt(n), where the influence terms are
the per-row contributions (w r for IPS, q_target + w (r - q_logged) for DR, w (r - value) / mean(w) for
SNIPS, the delta method). They treat the reward model as fixed: the direct method's interval is the model's
sampling noise only, never its bias. `bootstrap` gives a seeded percentile interval for any estimator.
`ess` is Kish's effective sample size of the weights, (sum w)^2 / sum w^2: how many logged decisions the
estimate really rests on (n for the direct method and the logging value).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A policy value with its interval, the number of logged decisions and the weights' effective size."""

    name: str
    value: float
    low: float
    high: float
    n: int
    ess: float


def _z(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _bad(name: str, values: np.ndarray, bad: np.ndarray, rule: str) -> ValueError:
    rows = np.flatnonzero(bad)[:5]
    return ValueError(f"{name} must be {rule}; first bad rows {rows.tolist()} (values {values[rows].tolist()})")


def _arrays(**named) -> list[np.ndarray]:
    """The named inputs as float vectors of one common, non-zero length, all finite."""
    out = [np.asarray(v, dtype=float) for v in named.values()]
    for name, v in zip(named, out, strict=True):
        if v.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise _bad(name, v, ~np.isfinite(v), "finite")
    lengths = {name: len(v) for name, v in zip(named, out, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")
    if not out[0].size:
        raise ValueError("no logged decisions: the inputs are empty")
    return out


def _weights(reward, logged_propensity, target_prob, **models) -> tuple[np.ndarray, ...]:
    """Validated (reward, importance weight, *model arrays): propensities in (0, 1], target probs in [0, 1]."""
    r, mu, pi, *rest = _arrays(reward=reward, logged_propensity=logged_propensity, target_prob=target_prob,
                               **models)
    bad = ~((mu > 0) & (mu <= 1))
    if bad.any():
        raise _bad("logged_propensity", mu, bad, "in (0, 1]")
    bad = ~((pi >= 0) & (pi <= 1))
    if bad.any():
        raise _bad("target_prob", pi, bad, "in [0, 1]")
    return r, pi / mu, *rest


def _kish(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2; 0 when every weight is 0."""
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def _estimate(name: str, value: float, influence: np.ndarray, confidence: float, ess: float) -> Estimate:
    """Normal-approximation interval from the per-row influence terms (NaN half-width with one row)."""
    n = len(influence)
    se = float(np.std(influence, ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    half = _z(confidence) * se
    return Estimate(name, float(value), float(value - half), float(value + half), n, float(ess))


def ips(reward: np.ndarray, logged_propensity: np.ndarray, target_prob: np.ndarray,
        confidence: float = 0.95) -> Estimate:
    """Inverse propensity scoring: mean of (target_prob / logged_propensity) * reward.

    When the target policy is the logging policy every weight is exactly 1 and this is the mean reward."""
    r, w = _weights(reward, logged_propensity, target_prob)
    terms = w * r
    return _estimate("IPS", float(np.mean(terms)), terms, confidence, _kish(w))


def snips(reward: np.ndarray, logged_propensity: np.ndarray, target_prob: np.ndarray,
          confidence: float = 0.95) -> Estimate:
    """Self-normalised IPS: sum w r / sum w, with a delta-method interval; NaN when no weight is positive."""
    r, w = _weights(reward, logged_propensity, target_prob)
    total = float(np.sum(w))
    if total <= 0:
        nan = float("nan")
        return Estimate("SNIPS", nan, nan, nan, len(r), 0.0)
    value = float(np.sum(w * r)) / total
    influence = w * (r - value) / (total / len(r))
    return _estimate("SNIPS", value, influence, confidence, _kish(w))


def mean_of(terms: np.ndarray, name: str = "mean", confidence: float = 0.95) -> Estimate:
    """The mean of per-decision terms with its normal interval (for a paired difference of two policies'
    terms, too); `ess` is n."""
    (t,) = _arrays(terms=terms)
    return _estimate(name, float(np.mean(t)), t, confidence, float(len(t)))


def direct(q_target: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Direct method: the mean of the reward model's expected reward under the target policy.

    Its interval is the spread of q over the logged contexts only; it says nothing about the model's bias."""
    return mean_of(q_target, "DM", confidence)


def dr_terms(reward: np.ndarray, logged_propensity: np.ndarray, target_prob: np.ndarray, q_logged: np.ndarray,
             q_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per logged decision, the doubly robust term q_target + w (reward - q_logged), and the weights w."""
    r, w, q_log, q_tgt = _weights(reward, logged_propensity, target_prob, q_logged=q_logged, q_target=q_target)
    return q_tgt + w * (r - q_log), w


def doubly_robust(reward: np.ndarray, logged_propensity: np.ndarray, target_prob: np.ndarray,
                  q_logged: np.ndarray, q_target: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Doubly robust: the direct method corrected by the importance-weighted residual of the logged action,
    mean of q_target + w (reward - q_logged). `ess` is that of the correction's weights."""
    terms, w = dr_terms(reward, logged_propensity, target_prob, q_logged, q_target)
    return _estimate("DR", float(np.mean(terms)), terms, confidence, _kish(w))


def logging_value(reward: np.ndarray, confidence: float = 0.95) -> Estimate:
    """The logging policy's own value: the mean logged reward, with its normal interval."""
    (r,) = _arrays(reward=reward)
    return _estimate("logging policy", float(np.mean(r)), r, confidence, float(len(r)))


def bootstrap(estimator: Callable[..., Estimate], *arrays: np.ndarray, seed: int, n_boot: int = 500,
              confidence: float = 0.95) -> Estimate:
    """Percentile bootstrap interval for `estimator(*arrays)`, resampling logged decisions (rows) with
    replacement from a numpy Generator seeded with `seed` (pass it from params). The value, n and ess are
    the full sample's; replicates whose value is NaN (no positive weight drawn) are left out."""
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, not {n_boot}")
    data = _arrays(**{f"arrays[{i}]": a for i, a in enumerate(arrays)})
    full = estimator(*data)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, len(data[0]), len(data[0]))
        values[b] = estimator(*(a[rows] for a in data)).value
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(values, [alpha, 1.0 - alpha])
    return dataclasses.replace(full, name=f"{full.name} (bootstrap)", low=float(low), high=float(high))


def compare(estimates: list[Estimate]) -> pd.DataFrame:
    """The estimates side by side, in the given order, with each interval's width."""
    table = pd.DataFrame([dataclasses.asdict(e) for e in estimates],
                         columns=[f.name for f in dataclasses.fields(Estimate)])
    table["width"] = table["high"] - table["low"]
    return table
