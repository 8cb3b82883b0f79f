"""Real public data (../shared/data): what the benchmarks on it share, and the Hillstrom e-mail experiment.

- the cure model's estimator is `models.estimators.cure_estimator`, the one training builds.
- `summary`: a metric over folds or seeds as mean, standard deviation, range and an interval.
- Hillstrom (Kevin Hillstrom's MineThatData e-mail experiment, 2008): `read_hillstrom` reads and checks it;
  `ArmSpace` makes its three randomised arms the actions of the project's `ResponseModel`; `two_model` and
  `class_transformation` are the usual uplift baselines; `qini_auc` and `uplift_auc` score uplift rankings
  and `policy_value` values a policy by inverse propensity weighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import train_test_split

from models import policy, safe
from models.contract import ContractError
from models.estimators import early_stopped_booster
from models.response import ResponseModel

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Summary:
    """One metric over k folds or seeds: mean, standard deviation, range, and a 95% interval for the mean."""

    mean: float
    sd: float
    low: float
    high: float
    ci: tuple[float, float]

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.sd:.4f}"

    @property
    def excludes_zero(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0


def summary(values, test_train_ratio: float = 0.0, confidence: float = 0.95) -> Summary:
    """Mean and spread of per-fold (per-seed) values. The interval is Student's t on the k values; with
    `test_train_ratio` > 0 it is Nadeau and Bengio's corrected resampled t (repeated random splits share
    their rows, so the plain t interval would be far too narrow): variance (1/k + n_test/n_train) s^2."""
    values = np.asarray(values, dtype=np.float64)
    k, mean = len(values), float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if k > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, max(k - 1, 1))) * sd * math.sqrt(1 / k + test_train_ratio)
    return Summary(mean, sd, float(values.min()), float(values.max()), (mean - half, mean + half))


# ---------------------------------------------------------------------------------------------- Hillstrom

HILLSTROM_DATA = SHARED_DATA / "hillstrom" / "hillstrom.csv"
ARMS = ("Mens E-Mail", "Womens E-Mail", "No E-Mail")  # the randomised `segment`; the last is the control
ZIP_CODES = {"Urban": 0, "Surburban": 1, "Suburban": 1, "Rural": 2}  # the file spells it "Surburban"
CHANNELS = {"Phone": 0, "Web": 1, "Multichannel": 2}
HILLSTROM_FEATURES = ("recency", "history", "mens", "womens", "newbie", "zip_code", "channel")
HILLSTROM_CATEGORICAL = ("zip_code", "channel")
_HILLSTROM_NUMBERS = {"recency": (1, 12), "history": (0, None), "mens": (0, 1), "womens": (0, 1),
                      "newbie": (0, 1), "visit": (0, 1), "conversion": (0, 1), "spend": (0, None)}


def _coded(raw: pd.DataFrame, column: str, codes: dict[str, int], table: str) -> np.ndarray:
    """A text column as integer codes; an unknown value is a ContractError naming the rows."""
    text = raw[column].astype(str).str.strip()
    unknown = ~text.isin(list(codes)).to_numpy()
    if unknown.any():
        rows = np.flatnonzero(unknown)
        raise ContractError(table, column, rows[:5].tolist(), f"unknown value, expected one of {', '.join(codes)}",
                            len(rows), text.iloc[rows[:5]].tolist())
    return text.map(codes).to_numpy(dtype=np.int64)


def read_hillstrom(path: str | Path = HILLSTROM_DATA) -> pd.DataFrame:
    """The Hillstrom file as numbers: the features, `arm` (0 men's e-mail, 1 women's, 2 none), `visit`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path} (the Hillstrom e-mail CSV; see ../shared/data/README.md)")
    table = path.name
    raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False, na_values=[""])
    raw.columns = [str(c).strip() for c in raw.columns]
    for column in (*_HILLSTROM_NUMBERS, "zip_code", "channel", "segment"):
        if column not in raw.columns:
            raise ContractError(table, column, problem="required column missing")
    out = {}
    for column, (low, high) in _HILLSTROM_NUMBERS.items():
        values = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(values) | (values < low) | ((values > high) if high is not None else False)
        if column != "history" and column != "spend":
            bad |= values % 1 != 0
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ContractError(table, column, rows[:5].tolist(), f"not a number in {low}..{high or ''}",
                                len(rows), raw[column].iloc[rows[:5]].tolist())
        out[column] = values
    out["zip_code"] = _coded(raw, "zip_code", ZIP_CODES, table)
    out["channel"] = _coded(raw, "channel", CHANNELS, table)
    out["arm"] = _coded(raw, "segment", {arm: i for i, arm in enumerate(ARMS)}, table)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class ArmSpace:
    """The experiment's arms as the actions of `models.response.ResponseModel`: each e-mail is a contact
    (channel e-mail, one window, the e-mail's content in the offer column), and no e-mail is the hold-out."""

    arms: tuple[str, ...] = ARMS[:-1]

    @property
    def actions(self) -> list[tuple[str, str, str]]:
        return [*(("email", "any", arm) for arm in self.arms), ("none", "none", "none")]

    @property
    def none_index(self) -> int:
        return len(self.arms)

    def codes(self) -> np.ndarray:
        """(actions, 3) codes of channel, window and content."""
        return np.array([[0, 0, i] for i in range(len(self.arms))] + [[1, 1, len(self.arms)]], dtype=np.float64)


def boosted(X: pd.DataFrame, y: np.ndarray, weight: np.ndarray, lgbm_params: dict, seed: int,
            categorical: tuple[str, ...]) -> lgb.Booster:
    """One booster for a baseline, trained exactly like each of the response model's sub-models."""
    return early_stopped_booster(X, y, weight, lgbm_params, seed, [c for c in categorical if c in X.columns])


def two_model(X: pd.DataFrame, arm: np.ndarray, y: np.ndarray, X_test: pd.DataFrame, lgbm_params: dict,
              seed: int, categorical: tuple[str, ...]) -> np.ndarray:
    """The two-model (T-learner) baseline: one classifier per arm on that arm's rows; (test rows, arms)."""
    out = np.empty((len(X_test), int(arm.max()) + 1))
    for a in range(out.shape[1]):
        rows = arm == a
        booster = boosted(X[rows], y[rows], np.ones(int(rows.sum())), lgbm_params, seed, categorical)
        out[:, a] = booster.predict(X_test)
    return out


def class_transformation(X: pd.DataFrame, arm: np.ndarray, y: np.ndarray, X_test: pd.DataFrame,
                         lgbm_params: dict, seed: int, categorical: tuple[str, ...]) -> np.ndarray:
    """The class-transformation baseline (Jaskowski and Jaroszewicz 2012), each e-mail against no e-mail:
    z = 1 for a treated visitor or an untreated non-visitor; with both groups weighted to half the rows,
    uplift = 2 P(z = 1 | x) - 1. Returns (test rows, e-mails) uplifts."""
    control = int(arm.max())
    out = np.empty((len(X_test), control))
    for a in range(control):
        rows = (arm == a) | (arm == control)
        treated = arm[rows] == a
        z = np.where(treated, y[rows], 1 - y[rows])
        share = treated.mean()
        weight = np.where(treated, 0.5 / share, 0.5 / (1 - share))
        booster = boosted(X[rows], z, weight, lgbm_params, seed, categorical)
        out[:, a] = 2 * booster.predict(X_test) - 1
    return out


def _curve_points(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative counts at each distinct score, highest first: rows, treated rows, treated and control
    responders."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    y, t, s = np.asarray(y, dtype=np.float64)[order], np.asarray(treated, dtype=np.float64)[order], score[order]
    cut = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    return cut + 1.0, np.cumsum(t)[cut], np.cumsum(y * t)[cut], np.cumsum(y * (1 - t))[cut]


def qini_curve(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows targeted (highest score first) and the Qini curve: treated responders minus control responders
    scaled to the treated count, from (0, 0)."""
    n, n_t, y_t, y_c = _curve_points(y, treated, score)
    n_c = n - n_t
    q = y_t - np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return np.r_[0.0, n], np.r_[0.0, q]


def uplift_curve(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows targeted and the uplift curve: (treated rate - control rate) among them times their number."""
    n, n_t, y_t, y_c = _curve_points(y, treated, score)
    n_c = n - n_t
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return np.r_[0.0, n], np.r_[0.0, (rate_t - rate_c) * n]


def _normalised_area(curve, perfect) -> float:
    """(area - random) / (perfect area - random), the random line joining (0, 0) to the curve's end."""
    (x, q), (xp, qp) = curve, perfect
    baseline = xp[-1] * qp[-1] / 2
    return float((np.trapezoid(q, x) - baseline) / (np.trapezoid(qp, xp) - baseline))


def qini_auc(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> float:
    """Normalised area under the Qini curve, as scikit-uplift's `qini_auc_score`: 0 for a random order, 1 for
    the perfect one (treated responders first, control responders last)."""
    y, t = np.asarray(y, dtype=np.float64), np.asarray(treated, dtype=np.float64)
    return _normalised_area(qini_curve(y, t, score), qini_curve(y, t, y * t - y * (1 - t)))


def uplift_auc(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> float:
    """Normalised area under the uplift curve (AUUC), as scikit-uplift's `uplift_auc_score`."""
    y, t = np.asarray(y, dtype=np.float64), np.asarray(treated, dtype=np.float64)
    control_responders, treated_non = np.sum((y == 1) & (t == 0)), np.sum((y == 0) & (t == 1))
    perfect = 2 * (y == t) + (y if control_responders > treated_non else t)
    return _normalised_area(uplift_curve(y, t, score), uplift_curve(y, t, perfect))


def policy_terms(y: np.ndarray, arm: np.ndarray, propensity: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Per held-out row, the inverse-propensity term of a policy's value: y / P(arm) where the policy would
    have sent the arm the row received, else 0. Their mean is the policy's visit rate (unbiased: the arms
    were randomised with known probabilities); a difference of two policies' terms is paired."""
    return np.where(arm == choice, y / propensity[arm], 0.0)


# ----------------------------------------------------------------------------- cure model against the baseline


def _account_rows(accounts: np.ndarray) -> list[np.ndarray]:
    """Row positions of each account (the unit a bootstrap resamples)."""
    codes, _ = pd.factorize(accounts)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def auc_difference(frame: pd.DataFrame, n_boot: int, seed: int, confidence: float = 0.95) -> dict:
    """ROC AUC of the model (`p`) and of the baseline (`p_baseline`) on `frame`'s rows, their difference, and
    a percentile bootstrap interval for it resampling accounts (an account's weekly examples move together);
    resamples holding one class only are skipped. None figures when the rows hold one class."""
    from sklearn.metrics import roc_auc_score

    y, p, q = (frame[c].to_numpy(dtype=float) for c in ("label", "p", "p_baseline"))
    if len(np.unique(y)) < 2:
        return {"n": len(frame), "accounts": frame["account_id"].nunique(), "roc_auc": None,
                "baseline_roc_auc": None, "difference": None, "low": None, "high": None}
    groups, rng, diffs = _account_rows(frame["account_id"].to_numpy()), np.random.default_rng(seed), []
    for _ in range(n_boot):
        rows = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        if len(np.unique(y[rows])) == 2:
            diffs.append(roc_auc_score(y[rows], p[rows]) - roc_auc_score(y[rows], q[rows]))
    auc, base = float(roc_auc_score(y, p)), float(roc_auc_score(y, q))
    tail = (1 - confidence) / 2 * 100
    low, high = (np.percentile(diffs, [tail, 100 - tail]) if diffs else (np.nan, np.nan))
    return {"n": len(frame), "accounts": len(groups), "roc_auc": auc, "baseline_roc_auc": base,
            "difference": auc - base, "low": float(low), "high": float(high)}


# The Hillstrom comparison of learners (benchmarks/hillstrom.py runs it over seeds; a test scores one half)

LEARNERS = ("cureflow", "two-model", "class transformation")
EMAILS = ("men's", "women's")


def fit_learners(train: pd.DataFrame, test: pd.DataFrame, propensity: np.ndarray, params: dict,
                 seed: int) -> dict[str, np.ndarray]:
    """Each learner's (held-out rows, 3) scores: for every arm the predicted visit chance (cureflow,
    two-model) or, for class transformation, the e-mails' uplifts with 0 for no e-mail."""
    lgbm, cats = params["response"]["lgbm"], HILLSTROM_CATEGORICAL
    X, X_test = train[list(HILLSTROM_FEATURES)], test[list(HILLSTROM_FEATURES)]
    arm, y = train["arm"].to_numpy(), train["visit"].to_numpy()
    model = ResponseModel(lgbm, ArmSpace(), cats, seed).fit(X, arm, y, propensity[arm], reached=None)
    uplift = class_transformation(X, arm, y, X_test, lgbm, seed, cats)
    return {"cureflow": model.predict_matrix(X_test.to_numpy(dtype=np.float64)),
            "two-model": two_model(X, arm, y, X_test, lgbm, seed, cats),
            "class transformation": np.hstack([uplift, np.zeros((len(test), 1))])}


def safe_choice(train: pd.DataFrame, test: pd.DataFrame, propensity: np.ndarray, params: dict, seed: int
                ) -> tuple[np.ndarray, safe.SafePolicy]:
    """The safe policy's arm per held-out row: the response model on 75% of the training half, the baseline
    and margin on its other 25% (the same models.safe steps as training), applied to the held-out half."""
    fit, check = train_test_split(train, test_size=0.25, stratify=train["arm"] * 2 + train["visit"],
                                  random_state=seed)
    cols = list(HILLSTROM_FEATURES)
    model = ResponseModel(params["response"]["lgbm"], ArmSpace(), HILLSTROM_CATEGORICAL, seed).fit(
        fit[cols], fit["arm"].to_numpy(), fit["visit"].to_numpy(), propensity[fit["arm"].to_numpy()], reached=None)

    def uplift(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each arm's visit chance over no e-mail (the last arm, 0), and the chance with no e-mail."""
        q = model.predict_matrix(rows[cols].to_numpy(dtype=np.float64))
        return q - q[:, -1:], q[:, -1]

    value, q0 = uplift(check)
    taken = check["arm"].to_numpy()
    scores = safe.dr_matrix(value, taken, propensity[taken], check["visit"].to_numpy() - q0)
    baseline, _ = safe.best_single(scores, np.ones_like(scores, dtype=bool))
    conf = params["policy"]["safe"]
    margin, _ = safe.select_margin(scores, value[:, :-1], policy.greedy(value[:, :-1]), safe.SafePolicy(baseline),
                                   float(conf["z"]), int(conf["min_departures"]), taken=taken)
    chosen = safe.SafePolicy(baseline, margin)
    test_value = uplift(test)[0][:, :-1]
    arm, _ = chosen.apply(test_value, policy.greedy(test_value))
    return np.where(arm >= 0, arm, len(ARMS) - 1), chosen


def score_seed(frame: pd.DataFrame, propensity: np.ndarray, params: dict, seed: int) -> dict[str, float]:
    """One held-out half: Qini and AUUC per learner and e-mail, policy values and their paired differences."""
    strata = frame["arm"] * 2 + frame["visit"]
    train, test = train_test_split(frame, test_size=float(params["hillstrom"]["test_fraction"]),
                                   stratify=strata, random_state=seed)
    scores = fit_learners(train, test, propensity, params, seed)
    arm, y = test["arm"].to_numpy(), test["visit"].to_numpy()
    control = len(ARMS) - 1
    out: dict[str, float] = {}
    for name, s in scores.items():
        for a, email in enumerate(EMAILS):
            rows = (arm == a) | (arm == control)
            uplift = s[rows, a] - s[rows, control]
            out[f"{name}|qini|{email}"] = qini_auc(y[rows], arm[rows] == a, uplift)
            out[f"{name}|auuc|{email}"] = uplift_auc(y[rows], arm[rows] == a, uplift)
    rates = train.groupby("arm")["visit"].mean()
    best = int(rates.loc[list(range(control))].idxmax())
    single = policy_terms(y, arm, propensity, np.full(len(test), best))
    out["best single|value|"] = single.mean()
    out["best single|arm|"] = best
    out["no e-mail|value|"] = policy_terms(y, arm, propensity, np.full(len(test), control)).mean()
    choices = {name: np.argmax(s, axis=1) for name, s in scores.items()}
    choices["cureflow, safe"], chosen = safe_choice(train, test, propensity, params, seed)
    out["cureflow, safe|departs|"] = float(np.isfinite(chosen.margin))
    for name, choice in choices.items():
        terms = policy_terms(y, arm, propensity, choice)
        out[f"{name}|value|"] = terms.mean()
        out[f"{name}|gain|"] = (terms - single).mean()
        for a, label in enumerate((*EMAILS, "none")):
            out[f"{name}|share|{label}"] = float(np.mean(choice == a))
    return out
