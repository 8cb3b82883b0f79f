"""The UCI credit-card file (Taiwan, April to September 2005): reading it, the default benchmark's features,
and the adapter that writes it in the data contract for a cure task.

Reading (`read_uci`) handles the quirks of the public file: a quoted header, numbers written as `1e+05`,
no `PAY_1` (September's status is `PAY_0`; it is read as `PAY_1`, so `PAY_k`, `BILL_AMTk` and `PAY_AMTk`
all name month k, 1 = September ... 6 = April), EDUCATION codes 0, 5 and 6 and MARRIAGE code 0 that the
documentation does not define (read as 0, "unknown"), and negative bills (a credit balance; kept). Anything
else that is off stops with a `ContractError` naming the file, the column and the first rows.

The adapter (`to_contract`) writes one account per customer and a monthly ledger counted in months, the
unit of the file's repayment status (-2 no consumption, -1 paid in full, 0 revolving credit, k >= 1 k
months of delay):
- one statement falls due each month, every `cure.horizon_days + 1` days from `uci.adapter.first_due`
  (the file gives months, not days); it is worth one nominal `monthly_amount` when the customer is behind
  or the month's bill is positive, nothing when the bill is zero or negative (no balance, a credit balance);
- arrears after a month's due day are `max(status, 0)` instalments; the payment of the month is what
  takes the previous arrears plus the new statement to that. Paid before the due date
  (`paid_days_before_due`) when the month's status is on time, on the due day itself (late) otherwise;
- a status that jumps by more than one month (0 then 2: September is the only month whose first level of
  delay is coded 1) cannot be placed in earlier months whose status is known: the missing instalments fall
  due that month, so arrears are right and days past due read from that month.

So with the project's 30-day horizon and as-of times at the local midnight that ends each due day (every
31 days), "cured within 30 days" is exactly the task "behind this month, back to paying on time the next":
payments in the 30 days cover the arrears only when the next month's status is on time.

Lost on the way (the contract has no place for them): the NT$ amounts of bills and payments (a card's
bill is a revolving balance of which an unrecorded minimum is due; counting the balance as due would make
every revolving customer overdue), the credit limit, sex, education and marriage; the difference between
-2, -1 and 0 (all "on time"); the days within the month; the month before April (April's arrears fall due
in April); the month after September (no transition from September). Age survives as `birth_year`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from models.contract import SPEC, ContractError, Portfolio, validate, write_dir
from models.files import write_json_atomic, write_text_atomic

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci_credit_card" / "UCI_Credit_Card.csv"
MONTHS = ("September", "August", "July", "June", "May", "April")  # month k is MONTHS[k - 1]
STATUS = tuple(f"PAY_{k}" for k in range(1, 7))
BILLS = tuple(f"BILL_AMT{k}" for k in range(1, 7))
PAID = tuple(f"PAY_AMT{k}" for k in range(1, 7))
RAW_FEATURES = ("LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE", *STATUS, *BILLS, *PAID)
CATEGORICAL = ("SEX", "EDUCATION", "MARRIAGE")
TARGET_NAMES = ("default.payment.next.month", "default payment next month")
DOCUMENTED = {"EDUCATION": (1, 2, 3, 4), "MARRIAGE": (1, 2, 3)}  # other codes are read as 0, unknown
UNKNOWN = 0
# whole-number columns and their domain: (low, high), None for unbounded
DOMAINS: dict[str, tuple[float | None, float | None]] = {
    "ID": (None, None), "LIMIT_BAL": (1, None), "SEX": (1, 2), "EDUCATION": (0, None), "MARRIAGE": (0, None),
    "AGE": (18, 110), **dict.fromkeys(STATUS, (-2, 8)), **dict.fromkeys(BILLS, (None, None)),
    **dict.fromkeys(PAID, (0, None)), "default": (0, 1),
}


@dataclass(frozen=True)
class UciData:
    """The file as clean integer columns (PAY_1..PAY_6, `default`), and what reading it changed, in words."""

    frame: pd.DataFrame
    notes: tuple[str, ...]


def _fail(table: str, column: str, bad: np.ndarray, problem: str, values: pd.Series | None = None) -> None:
    """Raise the ContractError naming the file, the column and the first offending data rows."""
    rows = np.flatnonzero(bad)
    shown = [] if values is None else values.iloc[rows[:5]].tolist()
    raise ContractError(table, column, rows[:5].tolist(), problem, len(rows), shown)


def _columns(raw: pd.DataFrame, table: str) -> tuple[pd.DataFrame, list[str]]:
    """September's status as PAY_1 (the file calls it PAY_0) and the target as `default`; all columns present."""
    notes = []
    if "PAY_0" in raw.columns and "PAY_1" in raw.columns:
        raise ContractError(table, "PAY_0", problem="both PAY_0 and PAY_1 present: which one is September?")
    if "PAY_0" in raw.columns:
        raw = raw.rename(columns={"PAY_0": "PAY_1"})
        notes.append("PAY_0 (September's status; the file has no PAY_1) read as PAY_1")
    target = next((name for name in TARGET_NAMES if name in raw.columns), None)
    if target is None:
        raise ContractError(table, TARGET_NAMES[0], problem="required column missing")
    raw = raw.rename(columns={target: "default"})
    for column in DOMAINS:
        if column not in raw.columns:
            raise ContractError(table, column, problem="required column missing")
    return raw, notes


def _whole_numbers(raw: pd.DataFrame, table: str) -> tuple[pd.DataFrame, int]:
    """Every column as int64 after its domain is checked; numbers may be written `1e+05`."""
    out, exponents = {}, 0
    for column, (low, high) in DOMAINS.items():
        text = raw[column]
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            _fail(table, column, np.isnan(values), "missing or not a number", text)
        if (values % 1 != 0).any():
            _fail(table, column, values % 1 != 0, "not a whole number", text)
        outside = np.zeros(len(values), dtype=bool)
        if low is not None:
            outside |= values < low
        if high is not None:
            outside |= values > high
        if outside.any():
            bounds = f"{'' if low is None else int(low)}..{'' if high is None else int(high)}"
            _fail(table, column, outside, f"out of range (must be in {bounds})", text)
        exponents += int(text.str.contains("[eE]", regex=True).sum())
        out[column] = values.astype(np.int64)
    frame = pd.DataFrame(out)
    if frame["ID"].duplicated().any():
        _fail(table, "ID", frame["ID"].duplicated(keep=False).to_numpy(), "duplicate key", raw["ID"])
    return frame, exponents


def _undocumented(frame: pd.DataFrame) -> list[str]:
    """EDUCATION and MARRIAGE codes the documentation does not define become 0 (unknown), counted."""
    notes = []
    for column, known in DOCUMENTED.items():
        odd = ~frame[column].isin(known)
        if odd.any():
            counts = frame.loc[odd, column].value_counts().sort_index()
            shown = ", ".join(f"{code}: {n:,}" for code, n in counts.items())
            notes.append(f"{column}: {int(odd.sum()):,} rows with undocumented codes ({shown}) read as 0 (unknown)")
            frame.loc[odd, column] = UNKNOWN
    return notes


def read_uci(path: str | Path = DEFAULT_DATA) -> UciData:
    """Read and check the UCI credit-card file; the notes say which quirks were met and how they were read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path} (the UCI credit-card CSV; see ../shared/data/README.md)")
    table = path.name
    raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False, na_values=[""],
                      skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    raw, notes = _columns(raw, table)
    try:
        frame, exponents = _whole_numbers(raw, table)
    except ContractError as err:  # name the file's lines beside the rows
        raise err.in_file(path) from None
    if exponents:
        notes.append(f"{exponents:,} numbers written in exponent form (1e+05) read as whole numbers")
    notes += _undocumented(frame)
    negative = int((frame[list(BILLS)] < 0).to_numpy().sum())
    if negative:
        notes.append(f"{negative:,} negative bills (credit balances) kept as they are")
    return UciData(frame, tuple(notes))


# ---------------------------------------------------------------------------------------------- benchmark


def default_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The file's 23 columns plus the behaviour the cure model reads, in the file's units: instalments behind
    now (`arrears_instalments`, which the cure model's monotone prior names), months missed over 3 and 6
    months, the worst delay, how much of the limit is used and how much of the bill was paid."""
    out = frame[list(RAW_FEATURES)].astype(np.float64)
    status = frame[list(STATUS)].to_numpy()
    bills = frame[list(BILLS)].to_numpy(dtype=np.float64)
    paid = frame[list(PAID)].to_numpy(dtype=np.float64)
    out["arrears_instalments"] = np.maximum(status[:, 0], 0)
    out["missed_3m"] = (status[:, :3] >= 1).sum(axis=1)
    out["missed_6m"] = (status >= 1).sum(axis=1)
    out["worst_delay_6m"] = np.maximum(status.max(axis=1), 0)
    out["utilisation"] = bills[:, 0] / frame["LIMIT_BAL"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # a bill of zero or less has nothing to pay
        out["paid_to_bill"] = np.where(bills[:, 1] > 0, paid[:, 0] / bills[:, 1], np.nan)
        owed = np.maximum(bills[:, 1:4], 0).sum(axis=1)
        out["paid_to_bill_3m"] = np.where(owed > 0, paid[:, :3].sum(axis=1) / owed, np.nan)
    return out


# ---------------------------------------------------------------------------------------------- adapter


@dataclass(frozen=True)
class AdapterConfig:
    """`params.yaml: uci.adapter` with the cure horizon: where the monthly statements fall in time."""

    first_due: date
    cycle_days: int
    timezone: str
    monthly_amount: float
    paid_days_before_due: int
    payment_hour: int

    @classmethod
    def from_params(cls, params: dict) -> AdapterConfig:
        """The statements fall due every horizon + 1 days, so a cure window ends as the next due day begins."""
        adapter = params["uci"]["adapter"]
        config = cls(date.fromisoformat(str(adapter["first_due"])), int(params["cure"]["horizon_days"]) + 1,
                     str(adapter["timezone"]), float(adapter["monthly_amount"]),
                     int(adapter["paid_days_before_due"]), int(adapter["payment_hour"]))
        if not 1 <= config.paid_days_before_due < config.cycle_days - 1:
            raise ValueError(f"uci.adapter.paid_days_before_due must be in 1..{config.cycle_days - 2}: an on-time "
                             f"payment must fall inside the cure window")
        return config

    def due_dates(self) -> list[date]:
        """The six due dates, April to September."""
        return [self.first_due + timedelta(days=self.cycle_days * j) for j in range(len(MONTHS))]

    def as_of(self, month: int) -> pd.Timestamp:
        """The as-of instant of month j (0 = April): the local midnight that ends its due day."""
        day = self.due_dates()[month] + timedelta(days=1)
        return pd.Timestamp(datetime.combine(day, datetime.min.time())).tz_localize(self.timezone)


def ledger(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """(accounts, 6) arrays, April first: status, arrears after each due day, amount due and paid, in
    instalments. Paid = previous arrears + due - arrears; a jump of more than one month falls due at once."""
    status = frame[list(STATUS[::-1])].to_numpy(dtype=np.int64)
    bills = frame[list(BILLS[::-1])].to_numpy(dtype=np.float64)
    arrears = np.maximum(status, 0)
    before = np.hstack([np.zeros((len(frame), 1), dtype=np.int64), arrears[:, :-1]])
    billed = ((status >= 1) | (bills > 0)).astype(np.int64)
    due = np.maximum(billed, arrears - before)
    return {"status": status, "arrears": arrears, "due": due, "paid": before + due - arrears}


def cure_task(frame: pd.DataFrame) -> pd.DataFrame:
    """The task from the statuses alone, April to August: who is behind in a month and whether the next
    month's status is on time. One row per (customer, month) behind: ID, month (0 = April), cured."""
    status = frame[list(STATUS[::-1])].to_numpy()
    behind = status[:, :-1] >= 1
    rows, months = np.nonzero(behind)
    cured = status[rows, months + 1] <= 0
    return pd.DataFrame({"ID": frame["ID"].to_numpy()[rows], "month": months, "cured": cured.astype(np.int64)})


def _accounts(frame: pd.DataFrame, config: AdapterConfig) -> pd.DataFrame:
    """One account per customer; what the file does not say is constant (so it tells the model nothing)."""
    n = len(frame)
    flags = {name: np.zeros(n, dtype=bool) for name, col in SPEC["accounts"].items() if col.kind == "bool"}
    return pd.DataFrame({
        "account_id": "uci-" + frame["ID"].astype(str).to_numpy(dtype=object),
        "opened_on": pd.Series(np.full(n, np.datetime64(config.first_due, "ns"))),
        "term_months": np.full(n, int(SPEC["accounts"]["term_months"].high)),  # a card has no term
        "monthly_amount": np.full(n, config.monthly_amount),
        "birth_year": (2005 - frame["AGE"]).to_numpy(),
        "employment": np.full(n, "unknown", dtype=object),
        "region": np.full(n, None, dtype=object),
        "timezone": np.full(n, config.timezone, dtype=object),
        **flags,
    })


def _local_instants(days: np.ndarray, hour: int, timezone: str) -> pd.Series:
    """UTC instants of `hour`:00 local on each calendar day."""
    naive = pd.Series(days.astype("datetime64[ns]")) + pd.Timedelta(hours=hour)
    return naive.dt.tz_localize(timezone).dt.tz_convert("UTC")


def to_contract(frame: pd.DataFrame, config: AdapterConfig) -> Portfolio:
    """The four contract tables of the ledger (no contacts: the file has none), validated."""
    book = ledger(frame)
    ids = "uci-" + frame["ID"].astype(str).to_numpy(dtype=object)
    due_days = np.array(config.due_dates(), dtype="datetime64[D]")
    acc, month = np.nonzero(book["due"] > 0)
    installments = pd.DataFrame({"account_id": ids[acc], "due_date": due_days[month].astype("datetime64[ns]"),
                                 "amount_due": book["due"][acc, month] * config.monthly_amount})
    acc, month = np.nonzero(book["paid"] > 0)
    on_time = book["status"][acc, month] <= 0
    days = due_days[month] - np.where(on_time, config.paid_days_before_due, 0).astype("timedelta64[D]")
    payments = pd.DataFrame({"account_id": ids[acc], "paid_at": _local_instants(days, config.payment_hour,
                                                                                 config.timezone),
                             "amount": book["paid"][acc, month] * config.monthly_amount,
                             "method": np.full(len(acc), "other", dtype=object)})
    contacts = pd.DataFrame({column: pd.Series(dtype=object) for column in SPEC["contacts"]})
    return validate({"accounts": _accounts(frame, config), "installments": installments, "payments": payments,
                     "contacts": contacts})


def train_params(params: dict) -> dict:
    """params.yaml with `uci.train` merged over it: what `cureflow train` reads for the adapted data."""
    merged = json.loads(json.dumps(params))
    for section, values in params["uci"]["train"].items():
        merged[section] = {**merged.get(section, {}), **values}
    config = AdapterConfig.from_params(merged)
    every = int(merged["cure"]["example_every_days"])
    if every != config.cycle_days:
        raise ValueError(f"uci.train.cure.example_every_days is {every}; the adapter's statements fall due every "
                         f"{config.cycle_days} days (cure.horizon_days + 1): they must agree")
    return merged


def write(data: UciData, out: Path, params: dict, source: Path) -> dict:
    """Write the tables, `params.yaml` for `cureflow train` and a manifest whose `end` puts the last as-of
    time at August's; returns the manifest."""
    merged = train_params(params)
    config = AdapterConfig.from_params(merged)
    portfolio = to_contract(data.frame, config)
    out = Path(out)
    write_dir(portfolio, out, "parquet")
    write_text_atomic(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), out / "params.yaml")
    task = cure_task(data.frame)
    horizon = int(merged["cure"]["horizon_days"])
    end = config.as_of(len(MONTHS) - 2) + pd.Timedelta(days=horizon)
    manifest = {
        "source": str(source), "end": end.isoformat(), "notes": list(data.notes),
        "counts": {name: len(frame) for name, frame in portfolio.tables.items()},
        "as_of": [config.as_of(j).isoformat() for j in range(len(MONTHS) - 1)],
        "behind": task.groupby("month").size().tolist(),
        "cured": task.groupby("month")["cured"].sum().tolist(),
    }
    write_json_atomic(manifest, out / "manifest.json", newline=True, indent=2)
    return manifest


def main(data: Path, out: Path, params: dict | None = None, log=print) -> dict:
    """`cureflow ingest-uci`: read the file, write the contract tables, say what `cureflow train` to run."""
    from models.config import load_params

    params = params or load_params()
    uci = read_uci(data)
    for note in uci.notes:
        log(f"read: {note}")
    manifest = write(uci, out, params, Path(data))
    counts = ", ".join(f"{n:,} {name}" for name, n in manifest["counts"].items())
    behind = sum(manifest["behind"])
    log(f"wrote {counts} to {out}; {behind:,} (customer, month) pairs behind in April-August, "
        f"{sum(manifest['cured']):,} back on time the next month")
    log(f"train with: CUREFLOW_PARAMS={out}/params.yaml cureflow train --data {out} --out {out}/train --no-register")
    return manifest
