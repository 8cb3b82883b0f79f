"""Portfolio statistics for exploration: days-past-due buckets month by month, delinquency rates and
vintage curves, roll rates between buckets (a transition matrix by month), and cure rates by segment.

Everything starts from `snapshots`: the point-in-time features of every account at the start of each
month (local midnight of the 1st in the portfolio's time zone), so the numbers agree with what the models
see. An account counts from the month after it opened until its contract has run out with nothing owed.
Buckets follow days past due: `current` (no arrears), `1-29`, `30-59`, `60-89` and `90+`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.contract import Portfolio
from models.experiments import wilson_interval
from models.features import FeatureConfig, Prepared, features_at
from models.labels import cure_labels

BUCKETS = ("current", "1-29", "30-59", "60-89", "90+")
BUCKET_STARTS = (1, 30, 60, 90)   # days past due at which buckets 1..4 begin


def dpd_bucket(days_past_due: np.ndarray, arrears: np.ndarray) -> np.ndarray:
    """The bucket name of each account: `current` without arrears, else by days past due."""
    dpd = np.nan_to_num(np.asarray(days_past_due, dtype=np.float64), nan=0.0)
    codes = np.searchsorted(np.asarray(BUCKET_STARTS, dtype=np.float64), dpd, side="right")
    codes = np.where(np.asarray(arrears, dtype=np.float64) > 0, np.maximum(codes, 1), 0)
    return np.asarray(BUCKETS, dtype=object)[codes]


def month_starts(prep: Prepared, end: pd.Timestamp, timezone: str) -> list[pd.Timestamp]:
    """The first of every month after the first instalment falls due, up to `end`, as UTC instants of the
    local midnight in `timezone`."""
    first = pd.Timestamp(int(prep.inst_due.min()), tz="UTC").tz_convert(timezone)
    start = (first.tz_localize(None).to_period("M") + 1).to_timestamp()
    last = pd.Timestamp(end).tz_convert(timezone).tz_localize(None)
    months = pd.date_range(start, last, freq="MS")
    return [m.tz_localize(timezone).tz_convert("UTC") for m in months]


def snapshots(portfolio: Portfolio, prep: Prepared, config: FeatureConfig, dates: list[pd.Timestamp],
              end: pd.Timestamp, timezone: str, horizon_days: int = 30) -> pd.DataFrame:
    """One row per active account and date: month (in `timezone`), employment, arrears, days past due,
    bucket, and `cured` (1 or 0 for an overdue account whose `horizon_days` label window ends before `end`,
    else NaN). Active: opened before the date's local day, and either term left or money owed."""
    accounts = portfolio.accounts.set_index("account_id")
    frames = []
    for t in dates:
        feats = features_at(prep, t, config)
        ids, arrears = feats["account_id"].to_numpy(), feats["arrears"].to_numpy()
        local_day = np.datetime64(t.tz_convert(timezone).tz_localize(None).normalize())
        active = (accounts["opened_on"].reindex(ids).to_numpy() < local_day) & (
            (feats["remaining_term_months"].to_numpy() > 0) | (arrears > 0))
        observed = t + pd.Timedelta(days=horizon_days) <= end
        cured = cure_labels(prep, t, arrears, horizon_days).astype(float) if observed else np.nan
        frame = pd.DataFrame({"as_of": t, "month": t.tz_convert(timezone).strftime("%Y-%m"), "account_id": ids,
                              "employment": accounts["employment"].reindex(ids).to_numpy(), "arrears": arrears,
                              "days_past_due": feats["days_past_due"].to_numpy(),
                              "bucket": dpd_bucket(feats["days_past_due"].to_numpy(), arrears),
                              "cured": np.where(arrears > 0, cured, np.nan)})
        frames.append(frame.loc[active])
    out = pd.concat(frames, ignore_index=True)
    out["bucket"] = pd.Categorical(out["bucket"], categories=BUCKETS, ordered=True)
    return out


def delinquency_rates(snaps: pd.DataFrame, thresholds: tuple[int, ...] = (1, 30, 60, 90)) -> pd.DataFrame:
    """Per month: active accounts and the share at least `d` days past due for each threshold (`1+`,
    `30+`, ...): the portfolio's delinquency curve over time."""
    rates = {f"{d}+": snaps["days_past_due"].ge(d) & snaps["arrears"].gt(0) for d in thresholds}
    frame = pd.DataFrame({"month": snaps["month"], **rates})
    out = frame.groupby("month").mean()
    out.insert(0, "accounts", frame.groupby("month").size())
    return out.reset_index()


def vintage_curves(snaps: pd.DataFrame, portfolio: Portfolio, threshold: int = 30, by: str = "Q") -> pd.DataFrame:
    """Per opening cohort (`by`: Q quarters, M months) and months on book: the share of the cohort's
    accounts ever at least `threshold` days past due so far. Only cohorts that opened inside the observed
    history (their whole life is in the data); columns are months on book."""
    opened = portfolio.accounts.set_index("account_id")["opened_on"]
    frame = snaps[["account_id", "as_of", "month", "days_past_due", "arrears"]].copy()
    frame["opened"] = opened.reindex(frame["account_id"]).to_numpy()
    first = pd.Period(frame["month"].min(), "M")
    frame = frame[pd.PeriodIndex(frame["opened"], freq="M") >= first - 1]
    on_book = pd.PeriodIndex(frame["month"], freq="M") - pd.PeriodIndex(frame["opened"], freq="M")
    frame["months_on_book"] = [o.n for o in on_book]
    frame["cohort"] = pd.PeriodIndex(frame["opened"], freq=by).astype(str)
    frame = frame.sort_values(["account_id", "months_on_book"])
    frame["bad"] = (frame["days_past_due"].ge(threshold) & frame["arrears"].gt(0)).astype(int)
    frame["ever_bad"] = frame.groupby("account_id")["bad"].cummax()
    curves = frame.pivot_table(index="cohort", columns="months_on_book", values="ever_bad", aggfunc="mean")
    curves.insert(0, "accounts", frame.groupby("cohort")["account_id"].nunique())
    return curves


def transitions(snaps: pd.DataFrame) -> pd.DataFrame:
    """Bucket of every account at one month start and at the next (accounts active at both): columns
    month (the first of the pair), from, to."""
    months = sorted(snaps["month"].unique())
    following = dict(zip(months[:-1], months[1:], strict=True))
    now = snaps[["month", "account_id", "bucket"]].rename(columns={"bucket": "from"})
    nxt = snaps[["month", "account_id", "bucket"]].rename(columns={"bucket": "to", "month": "next"})
    now = now[now["month"].isin(following)].assign(next=lambda f: f["month"].map(following))
    return now.merge(nxt, on=["next", "account_id"]).drop(columns="next")


def transition_matrix(trans: pd.DataFrame, month: str | None = None, counts: bool = False) -> pd.DataFrame:
    """From-bucket x to-bucket: the share of accounts in each row's bucket that were in each column's
    bucket a month later (rows sum to 1), for one month or pooled over all; `counts` gives the numbers."""
    if month is not None:
        trans = trans[trans["month"] == month]
    table = pd.crosstab(trans["from"], trans["to"]).reindex(index=list(BUCKETS), columns=list(BUCKETS), fill_value=0)
    return table if counts else table.div(table.sum(axis=1).replace(0, np.nan), axis=0)


def roll_rates(trans: pd.DataFrame) -> pd.DataFrame:
    """Per month and from-bucket: accounts, and the shares that rolled forward (a worse bucket), stayed,
    improved to a better overdue bucket, or cured to current."""
    f = trans["from"].cat.codes.to_numpy()
    t = trans["to"].cat.codes.to_numpy()
    frame = pd.DataFrame({"month": trans["month"].to_numpy(), "from": trans["from"].reset_index(drop=True),
                          "roll_forward": t > f, "stay": t == f, "improve": (t < f) & (t > 0),
                          "cure": (t == 0) & (f > 0)})
    out = frame.groupby(["month", "from"], observed=True).mean()
    out.insert(0, "accounts", frame.groupby(["month", "from"], observed=True).size())
    return out.reset_index()


def cure_rates(snaps: pd.DataFrame, by: str | list[str] = "employment", confidence: float = 0.95) -> pd.DataFrame:
    """Per segment: overdue account-months with an observed label, the share that cured within the horizon,
    and its Wilson interval."""
    by = [by] if isinstance(by, str) else list(by)
    known = snaps[snaps["cured"].notna()]
    out = known.groupby(by, observed=True)["cured"].agg(cases="size", cured="sum").reset_index()
    out["rate"] = out["cured"] / out["cases"]
    out["low"], out["high"] = wilson_interval(out["cured"].to_numpy(), out["cases"].to_numpy(), confidence)
    return out


def monthly_snapshots(portfolio: Portfolio, params: dict, end: pd.Timestamp) -> pd.DataFrame:
    """`snapshots` at every month start of the history, in the portfolio's default time zone, with the
    cure horizon of params (what the exploration notebook starts from)."""
    from models.features import prepare

    config = FeatureConfig.from_params(params)
    zone = params["calendar"]["default_timezone"]
    prep = prepare(portfolio, config)
    return snapshots(portfolio, prep, config, month_starts(prep, end, zone), end, zone,
                     int(params["cure"]["horizon_days"]))
