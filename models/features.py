"""Point-in-time payment-behaviour features: one implementation for training, batch and real-time scoring.

`prepare` turns a validated Portfolio into sorted numpy arrays once (account codes, due instants, local
contact windows); `features_at` computes every feature at an as-of instant `t` from rows strictly before
`t` (due instant < t, paid_at < t, contacted_at < t), so rows at or after `t` can never change a feature.
Everything is vectorised over accounts with bincount/searchsorted; there is no per-account Python loop,
so the same code serves one account in the API and a million in the nightly batch.

Conventions: an instalment counts at t once its due date is before t's local calendar date, that is from
the local midnight that ends its due day (at a local midnight this is exactly the contract's
`due_date < t`; during the due day itself the debit has not failed yet, so a customer whose direct debit
runs at 10:00 is not overdue at 09:00). Days past due count from the start of the due date. Payments
settle the oldest instalment first (FIFO); an instalment is "missed" when it was not fully paid by the
end of its due day (the contract has no failed-debit event: a missed due-day debit *is* the failed debit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models import calendar, vocab
from models.contract import Portfolio

DAY_NS = 86_400 * 10**9
EPOCH = pd.Timestamp("2000-01-01", tz="UTC")
CATEGORICAL = ("employment", "last_payment_method")
# outbound channels whose timing is the customer's choice to answer (letters arrive whenever)
TIMED_CHANNELS = ("phone", "sms", "email", "ivr")


@dataclass(frozen=True)
class FeatureConfig:
    """The `features` and `calendar` sections of params.yaml, frozen."""

    lookback_months: tuple[int, ...]
    contact_lookback_days: int
    window_lookback_days: int
    partial_payment_ratio: float
    windows: tuple[calendar.Window, ...]
    money_decimals: int = 3
    cure_history_months: int = 0   # 0: no cure-history features (bundles trained before they existed)

    @classmethod
    def from_params(cls, params: dict) -> FeatureConfig:
        feat = params["features"]
        return cls(
            tuple(feat["lookback_months"]),
            int(feat["contact_lookback_days"]),
            int(feat["window_lookback_days"]),
            float(feat["partial_payment_ratio"]),
            calendar.parse_windows(params["calendar"]),
            money_decimals(feat.get("money_decimals", 3)),
            cure_history_months(feat.get("cure_history_months", 0)),
        )

    @property
    def money_scale(self) -> int:
        """Money is counted in integer units of 1 / money_scale of the currency."""
        return 10 ** self.money_decimals


def money_decimals(value) -> int:
    """params features.money_decimals: the decimals of money kept, 0..3 (3 keeps 616.545 exactly, and the
    largest amount the contract allows, vocab.MAX_AMOUNT = 10^12, stays below 2^53 units: exact in float64)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise ValueError(f"params features.money_decimals must be a whole number in 0..3, not {value!r}")
    return value


def cure_history_months(value) -> int:
    """params features.cure_history_months: how far back the cure-history features look, in whole months
    (0 turns them off)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 120:
        raise ValueError(f"params features.cure_history_months must be a whole number in 0..120, not {value!r}")
    return value


def to_units(amounts, scale: int) -> np.ndarray:
    """Amounts as int64 units of 1 / scale of the currency, rounded once per row (sums stay exact)."""
    return np.rint(np.asarray(amounts, dtype=np.float64) * scale).astype(np.int64)


def feature_names(config: FeatureConfig) -> list[str]:
    """The model's columns, in order."""
    names = ["arrears", "arrears_instalments", "days_past_due", "monthly_amount", "tenure_months",
             "remaining_term_months", "age", "employment"]
    for m in config.lookback_months:
        names += [f"missed_{m}m", f"paid_late_{m}m"]
    if config.cure_history_months:
        h = config.cure_history_months
        names += [f"late_cured_30d_{h}m", f"late_cured_30d_share_{h}m", f"arrears_spells_{h}m"]
    names += ["days_late_mean_12m", "days_late_max_12m", "partial_payments_6m", "manual_payments_12m",
              "paid_90d_instalments", "days_since_last_payment", "last_payment_method"]
    for ch in vocab.CONTACT_CHANNELS:
        names += [f"{ch}_attempts_{config.contact_lookback_days}d", f"{ch}_reached_{config.contact_lookback_days}d"]
    for win in config.windows:
        names += [f"{win.name}_attempts", f"{win.name}_reach_rate"]
    names += ["timed_attempts", "timed_reach_rate", "promises_made_90d", "promises_kept_90d",
              "days_since_last_contact", "days_since_last_reach"]
    return names


@dataclass
class Prepared:
    """A portfolio as sorted arrays, independent of the as-of time (built once, queried many times)."""

    account_id: np.ndarray
    opened: np.ndarray          # ns since epoch, UTC instant of local midnight of opened_on
    term: np.ndarray
    monthly: np.ndarray         # float yen
    birth_year: np.ndarray
    employment: np.ndarray      # int code into vocab.EMPLOYMENT
    inst_acc: np.ndarray
    inst_due: np.ndarray        # ns, local midnight starting the due date; sorted by (acc, due)
    inst_end: np.ndarray        # ns, local midnight ending the due date: the instalment counts from here
    inst_units: np.ndarray      # int64 units of 1 / scale of the currency
    pay_acc: np.ndarray
    pay_at: np.ndarray          # ns, sorted by (acc, paid_at)
    pay_units: np.ndarray
    pay_method: np.ndarray
    con_acc: np.ndarray
    con_at: np.ndarray          # ns, sorted by (acc, contacted_at)
    con_channel: np.ndarray     # code into vocab.CHANNELS
    con_outcome: np.ndarray     # code into vocab.OUTCOMES
    con_outbound: np.ndarray
    con_window: np.ndarray      # code into config.windows, -1 when outside every window
    zone: np.ndarray            # effective IANA zone name (the default where missing or invalid)
    tz_valid: np.ndarray        # False when the account's zone is not a known IANA name
    flags: dict[str, np.ndarray]  # the accounts' vocab.FLAG_COLUMNS as bool arrays
    scale: int = 100            # money units per currency unit (FeatureConfig.money_scale)

    @property
    def n(self) -> int:
        return len(self.account_id)

    def take(self, positions: np.ndarray) -> Prepared:
        """The accounts at `positions` (ascending) with their own history rows, in the same order: every feature
        of an account reads its own rows only, so the features of the part are the rows of the whole's. The
        nightly batch computes arrears for everyone, then the rest for the few overdue (`ScoringBundle.decide`)."""
        code = np.full(self.n, -1, dtype=np.int64)
        code[positions] = np.arange(len(positions))

        def rows(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            new = code[acc]
            kept = np.flatnonzero(new >= 0)
            return kept, new[kept]

        (i, i_acc), (p, p_acc), (c, c_acc) = rows(self.inst_acc), rows(self.pay_acc), rows(self.con_acc)
        return Prepared(
            account_id=self.account_id[positions], opened=self.opened[positions], term=self.term[positions],
            monthly=self.monthly[positions], birth_year=self.birth_year[positions],
            employment=self.employment[positions],
            inst_acc=i_acc, inst_due=self.inst_due[i], inst_end=self.inst_end[i], inst_units=self.inst_units[i],
            pay_acc=p_acc, pay_at=self.pay_at[p], pay_units=self.pay_units[p], pay_method=self.pay_method[p],
            con_acc=c_acc, con_at=self.con_at[c], con_channel=self.con_channel[c], con_outcome=self.con_outcome[c],
            con_outbound=self.con_outbound[c], con_window=self.con_window[c],
            zone=self.zone[positions], tz_valid=self.tz_valid[positions],
            flags={name: values[positions] for name, values in self.flags.items()}, scale=self.scale,
        )


def _codes(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    return pd.Categorical(values.astype(object), categories=list(vocabulary)).codes.astype(np.int16)


def _ns(series: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch of a tz-aware datetime series."""
    return pd.DatetimeIndex(series).tz_convert("UTC").as_unit("ns").asi8.copy()


def _sorted_by(acc: np.ndarray, when: np.ndarray) -> np.ndarray:
    """The stable order by (account, time): rows already in that order (as exports usually are) keep it
    without a sort, which is what the stable sort would give."""
    if len(acc) > 1:
        step = np.diff(acc)
        if not ((step < 0) | ((step == 0) & (np.diff(when) < 0))).any():
            return np.arange(len(acc))
    return np.lexsort((when, acc))


def prepare(portfolio: Portfolio, config: FeatureConfig) -> Prepared:
    """Sort and encode the four tables once; local windows and due instants use each account's zone."""
    acc = portfolio.accounts
    zones = calendar.effective_timezones(acc["timezone"]).to_numpy()
    code_of = pd.Index(acc["account_id"].to_numpy())
    inst, pay, con = portfolio.installments, portfolio.payments, portfolio.contacts

    i_acc = code_of.get_indexer(inst["account_id"]).astype(np.int64)
    inst_zones = pd.Series(zones[i_acc], index=inst.index)
    i_due = _ns(calendar.local_midnight_utc(inst["due_date"], inst_zones))
    i_end = _ns(calendar.local_midnight_utc(inst["due_date"] + pd.Timedelta(days=1), inst_zones))
    i_order = _sorted_by(i_acc, i_due)
    p_acc = code_of.get_indexer(pay["account_id"]).astype(np.int64)
    p_at = _ns(pay["paid_at"])
    p_order = _sorted_by(p_acc, p_at)
    c_acc = code_of.get_indexer(con["account_id"]).astype(np.int64)
    c_at = _ns(con["contacted_at"])
    c_local = calendar.to_local(con["contacted_at"], pd.Series(zones[c_acc], index=con.index))
    c_window = calendar.window_codes(c_local, config.windows)
    c_order = _sorted_by(c_acc, c_at)
    opened = _ns(calendar.local_midnight_utc(acc["opened_on"], pd.Series(zones, index=acc.index)))
    return Prepared(
        account_id=acc["account_id"].to_numpy(dtype=object),
        opened=opened,
        term=acc["term_months"].to_numpy(dtype=np.float64),
        monthly=acc["monthly_amount"].to_numpy(dtype=np.float64),
        birth_year=acc["birth_year"].to_numpy(dtype=np.float64),
        employment=_codes(acc["employment"], vocab.EMPLOYMENT),
        inst_acc=i_acc[i_order], inst_due=i_due[i_order], inst_end=i_end[i_order],
        inst_units=to_units(inst["amount_due"], config.money_scale)[i_order],
        pay_acc=p_acc[p_order], pay_at=p_at[p_order],
        pay_units=to_units(pay["amount"], config.money_scale)[p_order],
        pay_method=_codes(pay["method"], vocab.PAYMENT_METHODS)[p_order],
        con_acc=c_acc[c_order], con_at=c_at[c_order],
        con_channel=_codes(con["channel"], vocab.CHANNELS)[c_order],
        con_outcome=_codes(con["outcome"], vocab.OUTCOMES)[c_order],
        con_outbound=(con["direction"].to_numpy(dtype=object) == "outbound")[c_order],
        con_window=c_window[c_order],
        zone=zones.astype(object),
        tz_valid=calendar.valid_timezones(acc["timezone"]),
        flags={name: acc[name].to_numpy(dtype=bool) for name in vocab.FLAG_COLUMNS},
        scale=config.money_scale,
    )


def prepare_arrow(tables: Mapping[str, pa.Table], config: FeatureConfig,
                  account_rows: Mapping[str, np.ndarray] | None = None) -> Prepared:
    """`prepare(validate_tables(tables), config)` for Arrow tables `models.contract.accepts_arrow` accepts,
    without building the pandas frames: the same arrays, value for value. `account_rows` may give each child
    table's account positions in `accounts` (the batch has them from cutting chunks). Local midnights are
    computed once per distinct (zone, date), the same function on fewer rows."""
    acc = tables["accounts"]
    n = acc.num_rows
    tz = _optional_text(acc, "timezone")
    zones = calendar.effective_timezones(tz).to_numpy()
    ids = acc["account_id"].combine_chunks()
    rows = dict(account_rows or {})
    for name in ("installments", "payments", "contacts"):
        if name not in rows:
            rows[name] = pc.index_in(tables[name]["account_id"], value_set=ids).to_numpy(zero_copy_only=False)
    inst, pay, con = tables["installments"], tables["payments"], tables["contacts"]
    zone_code, zone_names = pd.factorize(zones)

    def midnights(days: np.ndarray, accounts: np.ndarray) -> np.ndarray:
        key = zone_code[accounts].astype(np.int64) * (1 << 20) + (days + (1 << 19))
        codes, uniques = pd.factorize(key)
        u_days, u_zone = uniques % (1 << 20) - (1 << 19), uniques // (1 << 20)
        dates = pd.Series((u_days * DAY_NS).astype("datetime64[ns]"))
        return _ns(calendar.local_midnight_utc(dates, pd.Series(zone_names[u_zone], dtype=object)))[codes]

    i_acc = np.asarray(rows["installments"], dtype=np.int64)
    i_days = _day_numbers(inst["due_date"])
    i_due, i_end = midnights(i_days, i_acc), midnights(i_days + 1, i_acc)
    i_order = _sorted_by(i_acc, i_due)
    p_acc = np.asarray(rows["payments"], dtype=np.int64)
    p_at = _instants(pay["paid_at"])
    p_order = _sorted_by(p_acc, p_at)
    c_acc = np.asarray(rows["contacts"], dtype=np.int64)
    c_at = _instants(con["contacted_at"])
    c_local = calendar.to_local(pd.Series(pd.DatetimeIndex(c_at.view("datetime64[ns]")).tz_localize("UTC")),
                                pd.Series(zones[c_acc], dtype=object))
    c_window = calendar.window_codes(c_local, config.windows)
    c_order = _sorted_by(c_acc, c_at)
    opened_days = _day_numbers(acc["opened_on"])
    opened = _ns(calendar.local_midnight_utc(pd.Series((opened_days * DAY_NS).astype("datetime64[ns]")),
                                             pd.Series(zones, dtype=object)))
    return Prepared(
        account_id=ids.to_numpy(zero_copy_only=False).astype(object),
        opened=opened,
        term=_floats(acc["term_months"]),
        monthly=_floats(acc["monthly_amount"]),
        birth_year=_floats(acc["birth_year"]) if "birth_year" in acc.column_names else np.full(n, np.nan),
        employment=_arrow_codes(acc["employment"], vocab.EMPLOYMENT),
        inst_acc=i_acc[i_order], inst_due=i_due[i_order], inst_end=i_end[i_order],
        inst_units=to_units(_floats(inst["amount_due"]), config.money_scale)[i_order],
        pay_acc=p_acc[p_order], pay_at=p_at[p_order],
        pay_units=to_units(_floats(pay["amount"]), config.money_scale)[p_order],
        pay_method=_arrow_codes(pay["method"], vocab.PAYMENT_METHODS)[p_order],
        con_acc=c_acc[c_order], con_at=c_at[c_order],
        con_channel=_arrow_codes(con["channel"], vocab.CHANNELS)[c_order],
        con_outcome=_arrow_codes(con["outcome"], vocab.OUTCOMES)[c_order],
        con_outbound=pc.equal(con["direction"], "outbound").to_numpy(zero_copy_only=False)[c_order],
        con_window=c_window[c_order],
        zone=zones.astype(object),
        tz_valid=calendar.valid_timezones(tz),
        flags={name: acc[name].to_numpy(zero_copy_only=False).astype(bool) for name in vocab.FLAG_COLUMNS},
        scale=config.money_scale,
    )


def _optional_text(table: pa.Table, column: str) -> pd.Series:
    """An optional text column as validated: object holding str, None where null or empty."""
    if column not in table.column_names:
        return pd.Series(np.full(table.num_rows, None, dtype=object), dtype=object)
    values = table[column].to_numpy(zero_copy_only=False).astype(object)
    values[pd.isna(values) | (values == "")] = None
    return pd.Series(values, dtype=object)


def _day_numbers(values: pa.ChunkedArray) -> np.ndarray:
    """A validated date column (date32, or timestamp[ns] at midnight) as days since the epoch."""
    if values.type == pa.date32():
        return values.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False) // DAY_NS


def _instants(values: pa.ChunkedArray) -> np.ndarray:
    """A validated tz-aware timestamp[ns] column as int64 UTC nanoseconds."""
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    """A validated number column as float64, NaN for null."""
    return np.asarray(values.to_pandas() if values.null_count else values.to_numpy(), dtype=np.float64)


def _arrow_codes(values: pa.ChunkedArray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """A validated category column as int16 codes into `vocabulary` (as `_codes`)."""
    return pc.index_in(values, value_set=pa.array(list(vocabulary))).to_numpy(zero_copy_only=False).astype(np.int16)


def _count(acc: np.ndarray, mask: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    w = None if weights is None else weights[mask]
    return np.bincount(acc[mask], weights=w, minlength=n).astype(np.float64)


def _last(acc: np.ndarray, values: np.ndarray, mask: np.ndarray, n: int, empty: float = np.nan) -> np.ndarray:
    """Per account, the value of the last masked row (rows are sorted by account, then time)."""
    out = np.full(n, empty, dtype=np.float64)
    rows = np.flatnonzero(mask)
    last = rows[np.append(acc[rows][1:] != acc[rows][:-1], True)] if len(rows) else rows
    out[acc[last]] = values[last]
    return out


def _within_offsets(acc: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Per row, the sum of `totals` over all earlier accounts (rows sorted by account)."""
    before = np.concatenate([[0], np.cumsum(totals)[:-1]])
    return before[acc]


def _fifo_paid_at(prep: Prepared, t: int, i_mask: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
    """For each instalment due before t, when payments before t fully covered it (FIFO); int64 max if not."""
    n = prep.n
    due_tot = np.bincount(prep.inst_acc[i_mask], weights=prep.inst_units[i_mask], minlength=n).astype(np.int64)
    pay_tot = np.bincount(prep.pay_acc[p_mask], weights=prep.pay_units[p_mask], minlength=n).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(np.maximum(due_tot, pay_tot))[:-1]])
    i_acc, i_cents = prep.inst_acc[i_mask], prep.inst_units[i_mask]
    p_acc, p_cents = prep.pay_acc[p_mask], prep.pay_units[p_mask]
    cum_due = np.cumsum(i_cents) - _within_offsets(i_acc, due_tot) + offset[i_acc]
    cum_pay = np.cumsum(p_cents) - _within_offsets(p_acc, pay_tot) + offset[p_acc]
    j = np.searchsorted(cum_pay, cum_due, side="left")
    found = j < len(cum_pay)
    found[found] &= p_acc[j[found]] == i_acc[found]
    paid_at = np.full(len(i_acc), np.iinfo(np.int64).max, dtype=np.int64)
    paid_at[found] = prep.pay_at[p_mask][j[found]]
    paid_at[i_cents == 0] = prep.inst_due[i_mask][i_cents == 0]
    return paid_at


def _arrears(prep: Prepared, i_mask: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
    """Per account, what fell due (rows `i_mask`) minus what was paid (rows `p_mask`), at least 0, in currency."""
    due_sum = _count(prep.inst_acc, i_mask, prep.n, prep.inst_units)
    paid_sum = _count(prep.pay_acc, p_mask, prep.n, prep.pay_units)
    return np.maximum(due_sum - paid_sum, 0.0) / prep.scale


def arrears_at(prep: Prepared, as_of: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """The `arrears` and `arrears_instalments` features of every account at `as_of` alone (two sums: who is
    overdue, before the rest)."""
    t = int(pd.Timestamp(as_of).tz_convert("UTC").value)
    arrears = _arrears(prep, prep.inst_end <= t, prep.pay_at < t)
    return arrears, _in_instalments(arrears, prep)


def months_before(t: int, months: int) -> int:
    """The instant `months` average months (30.4375 days, rounded to whole days) before `t`: where every
    "in the last N months" window of the instalment features begins."""
    return t - int(round(months * 30.4375)) * DAY_NS


def _in_instalments(arrears: np.ndarray, prep: Prepared) -> np.ndarray:
    """Arrears counted in monthly instalments (the `arrears_instalments` feature)."""
    return arrears / prep.monthly


def _instalment_features(prep: Prepared, t: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Arrears, days past due, missed and late instalments, days late."""
    n = prep.n
    i_mask = prep.inst_end <= t
    p_mask = prep.pay_at < t
    paid_at = _fifo_paid_at(prep, t, i_mask, p_mask)
    acc, due, due_end = prep.inst_acc[i_mask], prep.inst_due[i_mask], prep.inst_end[i_mask]
    arrears = _arrears(prep, i_mask, p_mask)
    unpaid = paid_at == np.iinfo(np.int64).max
    oldest = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(oldest, acc[unpaid], due[unpaid])
    dpd = np.where((arrears > 0) & (oldest < t), (t - oldest) / DAY_NS, 0.0)
    late = paid_at >= due_end
    days_late = np.floor(np.maximum(np.minimum(paid_at, t) - due, 0) / DAY_NS)
    out = {"arrears": arrears, "days_past_due": np.floor(dpd)}
    for m in config.lookback_months:
        recent = due >= months_before(t, m)
        out[f"missed_{m}m"] = np.bincount(acc[recent & late], minlength=n).astype(np.float64)
        out[f"paid_late_{m}m"] = np.bincount(acc[recent & late & ~unpaid], minlength=n).astype(np.float64)
    if config.cure_history_months:
        out.update(_cure_history(acc, due, late, unpaid, days_late, t, config.cure_history_months, n))
    year = due >= t - 365 * DAY_NS
    count = np.bincount(acc[year], minlength=n)
    total = np.bincount(acc[year], weights=days_late[year], minlength=n)
    out["days_late_mean_12m"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    worst = np.full(n, -np.inf)
    np.maximum.at(worst, acc[year], days_late[year])
    out["days_late_max_12m"] = np.where(count > 0, worst, np.nan)
    return out


def _cure_history(acc: np.ndarray, due: np.ndarray, late: np.ndarray, unpaid: np.ndarray, days_late: np.ndarray,
                  t: int, months: int, n: int) -> dict[str, np.ndarray]:
    """How the account came back from arrears before: of its instalments due in the last `months` that were paid
    late, how many were paid within 30 days of falling due (and their share of the late ones), and how many
    spells of arrears it had (a late instalment after one paid on time, or its first). A payer who forgets
    and pays within days and one who falls behind for months miss the same debits; this tells them apart."""
    recent = due >= months_before(t, months)  # the window of `missed_{months}m`: the share's denominator is it
    late_n = np.bincount(acc[recent & late], minlength=n)
    quick = np.bincount(acc[recent & late & ~unpaid & (days_late <= 30)], minlength=n)
    after_late = np.r_[False, late[:-1]] & np.r_[False, acc[1:] == acc[:-1]]
    return {f"late_cured_30d_{months}m": quick.astype(np.float64),
            f"late_cured_30d_share_{months}m": np.where(late_n > 0, quick / np.maximum(late_n, 1), np.nan),
            f"arrears_spells_{months}m": np.bincount(acc[recent & late & ~after_late], minlength=n)
            .astype(np.float64)}


def _payment_features(prep: Prepared, t: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Recency, method, partial and manual payments, money paid in the last 90 days."""
    n, acc, at = prep.n, prep.pay_acc, prep.pay_at
    before = at < t
    monthly_of_row = prep.monthly[acc] * prep.scale
    partial = before & (at >= t - 182 * DAY_NS) & (prep.pay_units < config.partial_payment_ratio * monthly_of_row)
    manual_code = vocab.PAYMENT_METHODS.index("direct_debit")
    manual = before & (at >= t - 365 * DAY_NS) & (prep.pay_method != manual_code)
    recent = before & (at >= t - 90 * DAY_NS)
    last_at = _last(acc, at.astype(np.float64), before, n)
    return {
        "partial_payments_6m": _count(acc, partial, n),
        "manual_payments_12m": _count(acc, manual, n),
        "paid_90d_instalments": _count(acc, recent, n, prep.pay_units) / prep.scale / prep.monthly,
        "days_since_last_payment": (t - last_at) / DAY_NS,
        "last_payment_method": _last(acc, prep.pay_method.astype(np.float64), before, n),
    }


def _promises_kept(prep: Prepared, t: int, promise: np.ndarray) -> np.ndarray:
    """Per promise row, whether a payment arrived within 7 days of it and before t."""
    p_mask = prep.pay_at < t
    pay_key = prep.pay_acc[p_mask] * (1 << 33) + (prep.pay_at[p_mask] - EPOCH.value) // 10**9
    rows = np.flatnonzero(promise)
    key = prep.con_acc[rows] * (1 << 33) + (prep.con_at[rows] - EPOCH.value) // 10**9
    j = np.searchsorted(pay_key, key, side="left")
    kept = np.zeros(len(rows), dtype=bool)
    ok = j < len(pay_key)
    pay_acc, pay_at = prep.pay_acc[p_mask], prep.pay_at[p_mask]
    kept[ok] = (pay_acc[j[ok]] == prep.con_acc[rows][ok]) & (pay_at[j[ok]] < prep.con_at[rows][ok] + 7 * DAY_NS)
    out = np.zeros(len(promise), dtype=bool)
    out[rows] = kept
    return out


def _contact_features(prep: Prepared, t: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Attempts and reach by channel and by time window, promises made and kept, contact recency."""
    n, acc, at = prep.n, prep.con_acc, prep.con_at
    before = (at < t) & prep.con_outbound & (prep.con_channel != vocab.CHANNELS.index("none"))
    reached = vocab.is_one_of(prep.con_outcome, vocab.REACHED_OUTCOMES, vocab.OUTCOMES)
    days = config.contact_lookback_days
    recent = before & (at >= t - days * DAY_NS)
    out: dict[str, np.ndarray] = {}
    for code, ch in enumerate(vocab.CHANNELS[:-1]):
        on = recent & (prep.con_channel == code)
        out[f"{ch}_attempts_{days}d"] = _count(acc, on, n)
        out[f"{ch}_reached_{days}d"] = _count(acc, on & reached, n)
    timed = vocab.is_one_of(prep.con_channel, TIMED_CHANNELS, vocab.CHANNELS)
    lookback = before & timed & (at >= t - config.window_lookback_days * DAY_NS)
    for code, win in enumerate(config.windows):
        on = lookback & (prep.con_window == code)
        attempts = _count(acc, on, n)
        out[f"{win.name}_attempts"] = attempts
        hits = _count(acc, on & reached, n)
        out[f"{win.name}_reach_rate"] = np.where(attempts > 0, hits / np.maximum(attempts, 1), np.nan)
    attempts = _count(acc, lookback, n)
    out["timed_attempts"] = attempts
    hits = _count(acc, lookback & reached, n)
    out["timed_reach_rate"] = np.where(attempts > 0, hits / np.maximum(attempts, 1), np.nan)
    promise = (at < t) & (at >= t - 90 * DAY_NS) & (prep.con_outcome == vocab.OUTCOMES.index("promise_to_pay"))
    out["promises_made_90d"] = _count(acc, promise, n)
    out["promises_kept_90d"] = _count(acc, _promises_kept(prep, t, promise), n)
    out["days_since_last_contact"] = (t - _last(acc, at.astype(np.float64), before, n)) / DAY_NS
    out["days_since_last_reach"] = (t - _last(acc, at.astype(np.float64), before & reached, n)) / DAY_NS
    return out


def _feature_columns(prep: Prepared, as_of: pd.Timestamp, config: FeatureConfig) -> dict[str, np.ndarray]:
    t = int(pd.Timestamp(as_of).tz_convert("UTC").value)
    cols = _instalment_features(prep, t, config)
    cols.update(_payment_features(prep, t, config))
    cols.update(_contact_features(prep, t, config))
    cols["arrears_instalments"] = _in_instalments(cols["arrears"], prep)
    cols["monthly_amount"] = prep.monthly
    tenure = (t - prep.opened) / DAY_NS / 30.4375
    cols["tenure_months"] = tenure
    cols["remaining_term_months"] = np.maximum(prep.term - tenure, 0.0)
    cols["age"] = pd.Timestamp(as_of).tz_convert("UTC").year - prep.birth_year
    cols["employment"] = prep.employment.astype(np.float64)
    return cols


def feature_matrix(prep: Prepared, as_of: pd.Timestamp, config: FeatureConfig) -> np.ndarray:
    """Every feature of every account at `as_of` as a float matrix, columns in `feature_names` order."""
    cols = _feature_columns(prep, as_of, config)
    return np.column_stack([cols[name] for name in feature_names(config)]) if prep.n else \
        np.empty((0, len(feature_names(config))))


def features_at(prep: Prepared, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Every feature of every account at `as_of` (one row per account, in the accounts' order)."""
    cols = _feature_columns(prep, as_of, config)
    frame = pd.DataFrame({name: cols[name] for name in feature_names(config)})
    frame.insert(0, "account_id", prep.account_id)
    return frame


# ---------------------------------------------------------------- the real-time requests, without pandas

def _index(vocabulary: tuple[str, ...]) -> dict[str, int]:
    return {value: code for code, value in enumerate(vocabulary)}


_EMPLOYMENT, _METHODS = _index(vocab.EMPLOYMENT), _index(vocab.PAYMENT_METHODS)
_CHANNELS, _OUTCOMES = _index(vocab.CHANNELS), _index(vocab.OUTCOMES)


def _rows_of(requests: Sequence[Mapping], table: str) -> tuple[list[int], list[Mapping]]:
    """The child rows of every request, with the position of the request each one belongs to."""
    owners, rows = [], []
    for code, request in enumerate(requests):
        for row in request.get(table) or ():
            owners.append(code)
            rows.append(row)
    return owners, rows


def prepare_requests(requests: Sequence[Mapping], config: FeatureConfig) -> Prepared:
    """The arrays `prepare` builds, straight from validated real-time requests (python dates and aware
    datetimes; a request's `contacts` may be None, meaning not sent): the API's hot path, no pandas.
    A test holds it equal to `prepare` on the same rows; checks are the caller's (`scoring.check_requests`)."""
    accounts = [request["account"] for request in requests]
    zones = [calendar.effective_timezone(a.get("timezone")) for a in accounts]
    i_own, inst = _rows_of(requests, "installments")
    i_due = np.array([calendar.local_midnight_ns(r["due_date"], zones[o])
                      for o, r in zip(i_own, inst, strict=True)], dtype=np.int64)
    i_end = np.array([calendar.local_midnight_ns(r["due_date"] + timedelta(days=1), zones[o])
                      for o, r in zip(i_own, inst, strict=True)], dtype=np.int64)
    i_acc = np.array(i_own, dtype=np.int64)
    i_order = _sorted_by(i_acc, i_due)
    p_own, pay = _rows_of(requests, "payments")
    p_acc, p_at = np.array(p_own, dtype=np.int64), np.array([calendar.instant_ns(r["paid_at"]) for r in pay], np.int64)
    p_order = _sorted_by(p_acc, p_at)
    c_own, con = _rows_of(requests, "contacts")
    c_acc, c_at = np.array(c_own, dtype=np.int64), np.array([calendar.instant_ns(r["contacted_at"]) for r in con],
                                                             dtype=np.int64)
    c_window = np.array([calendar.window_code(r["contacted_at"].astimezone(calendar.zone(zones[o])).replace(
        tzinfo=None), config.windows) for o, r in zip(c_own, con, strict=True)], dtype=np.int64)
    c_order = _sorted_by(c_acc, c_at)
    return Prepared(
        account_id=np.array([a["account_id"] for a in accounts], dtype=object),
        opened=np.array([calendar.local_midnight_ns(a["opened_on"], z)
                         for a, z in zip(accounts, zones, strict=True)], dtype=np.int64),
        term=np.array([a["term_months"] for a in accounts], dtype=np.float64),
        monthly=np.array([a["monthly_amount"] for a in accounts], dtype=np.float64),
        birth_year=np.array([np.nan if a.get("birth_year") is None else a["birth_year"] for a in accounts],
                            dtype=np.float64),
        employment=np.array([_EMPLOYMENT[a["employment"]] for a in accounts], dtype=np.int16),
        inst_acc=i_acc[i_order], inst_due=i_due[i_order], inst_end=i_end[i_order],
        inst_units=to_units([r["amount_due"] for r in inst], config.money_scale)[i_order],
        pay_acc=p_acc[p_order], pay_at=p_at[p_order],
        pay_units=to_units([r["amount"] for r in pay], config.money_scale)[p_order],
        pay_method=np.array([_METHODS[r["method"]] for r in pay], dtype=np.int16)[p_order],
        con_acc=c_acc[c_order], con_at=c_at[c_order],
        con_channel=np.array([_CHANNELS[r["channel"]] for r in con], dtype=np.int16)[c_order],
        con_outcome=np.array([_OUTCOMES[r["outcome"]] for r in con], dtype=np.int16)[c_order],
        con_outbound=np.array([r["direction"] == "outbound" for r in con], dtype=bool)[c_order],
        con_window=c_window[c_order],
        zone=np.array(zones, dtype=object),
        tz_valid=np.array([calendar.is_valid_timezone(a.get("timezone") or None) for a in accounts], dtype=bool),
        flags={name: np.array([bool(a[name]) for a in accounts], dtype=bool) for name in vocab.FLAG_COLUMNS},
        scale=config.money_scale,
    )
