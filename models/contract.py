"""The data contract (../shared/CONTRACT.md): read, validate and normalise the four tables.

Every reader of cureflow (training, nightly batch, real-time API) goes through `validate`, so they all
see the same frames with the same dtypes:

- text and categories: `object` holding Python `str`, `None` when missing (an empty string is missing:
  a CSV file cannot tell the two apart)
- dates: `datetime64[ns]`, naive, at midnight; timestamps: `datetime64[ns, UTC]`
- required whole numbers: `int64`; optional whole numbers and all decimals: `float64`, NaN when missing
- flags: numpy `bool`

A table that breaks the contract raises one `ContractError` naming the table, the column and the first
offending rows. The checks are vectorised: the per-row work is done by pandas, numpy and pyarrow, and
the list of offending rows is only computed once a check has failed.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from models.files import replace_atomically
from models.vocab import CHANNELS, DIRECTIONS, EMPLOYMENT, MAX_AMOUNT, OUTCOMES, PAYMENT_METHODS, TABLES

Kind = Literal["string", "category", "date", "timestamp", "int", "float", "bool"]


@dataclass(frozen=True)
class Column:
    """One contract column: its kind, whether it must be present and non-null, and its domain."""

    kind: Kind
    required: bool = True
    values: tuple[str, ...] = ()  # category: the allowed values
    low: float | None = None  # numbers: lower bound, inclusive unless low_open
    high: float | None = None  # numbers: upper bound, inclusive
    low_open: bool = False
    unique: bool = False  # text: a key, no two rows share a value


# The contract, one line per column, in contract order (the order of the returned frames).
SPEC: dict[str, dict[str, Column]] = {
    "accounts": {
        "account_id": Column("string", unique=True),
        "opened_on": Column("date"),
        "term_months": Column("int", low=1, high=180),
        "monthly_amount": Column("float", low=0, low_open=True, high=MAX_AMOUNT),
        "birth_year": Column("int", required=False, low=1900, high=2100),
        "employment": Column("category", values=EMPLOYMENT),
        "region": Column("string", required=False),
        "timezone": Column("string", required=False),  # not checked against IANA: the rules fail closed
        "consent_phone": Column("bool"),
        "consent_sms": Column("bool"),
        "consent_email": Column("bool"),
        "do_not_contact": Column("bool"),
        "dispute_open": Column("bool"),
        "legal_representative": Column("bool"),
        "bankruptcy": Column("bool"),
        "vulnerable": Column("bool"),
    },
    "installments": {
        "account_id": Column("string"),
        "due_date": Column("date"),
        "amount_due": Column("float", low=0, high=MAX_AMOUNT),
    },
    "payments": {
        "account_id": Column("string"),
        "paid_at": Column("timestamp"),
        "amount": Column("float", low=0, low_open=True, high=MAX_AMOUNT),
        "method": Column("category", values=PAYMENT_METHODS),
    },
    "contacts": {
        "contact_id": Column("string", unique=True),
        "account_id": Column("string"),
        "contacted_at": Column("timestamp"),
        "channel": Column("category", values=CHANNELS),
        "direction": Column("category", values=DIRECTIONS),
        "template": Column("string", required=False),
        "outcome": Column("category", values=OUTCOMES),
        "experiment_id": Column("string", required=False),
        "propensity": Column("float", required=False, low=0, low_open=True, high=1),
        "decision_id": Column("string", required=False),
    },
}
# (table, column, parent table, parent column): every value must exist in the parent key
REFERENCES = (
    ("installments", "account_id", "accounts", "account_id"),
    ("payments", "account_id", "accounts", "account_id"),
    ("contacts", "account_id", "accounts", "account_id"),
)
_FOREIGN_KEYS = {(table, column) for table, column, _, _ in REFERENCES}
# (table, column, value, other column, other value): the value appears if and only if the other does
PAIRED_VALUES = (("contacts", "outcome", "held_out", "channel", "none"),)

FORMATS = ("parquet", "csv")
MAX_ROWS = 5  # offending rows named in an error
SOURCE_FILE = b"cureflow.source_file"  # Arrow schema metadata: the CSV file a table was read from
MAX_VALUE_CHARS = 40
_DAY_NS = 86_400 * 10**9
_FIRST_DAY, _PAST_LAST_DAY = np.datetime64("1678-01-01"), np.datetime64("2262-01-01")  # datetime64[ns] range
_TRUE_TEXT = ("true", "True", "TRUE", "1")
_FALSE_TEXT = ("false", "False", "FALSE", "0")
_BOOLEANS = {**dict.fromkeys(_TRUE_TEXT, True), **dict.fromkeys(_FALSE_TEXT, False), True: True, False: False}
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
_ISO_TIME = r"[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
_ISO_TIMESTAMP = rf"^\d{{4}}-\d{{2}}-\d{{2}}{_ISO_TIME}(Z|[+-]\d{{2}}(:?\d{{2}})?)$"
_ISO_NAIVE = rf"^\d{{4}}-\d{{2}}-\d{{2}}({_ISO_TIME})?$"


class ContractError(ValueError):
    """A table that breaks the contract: the table, the column, the problem and the first offending rows.

    Built as `ContractError(table, column, rows, problem, count=None, values=(), lines=(), file=None)`.
    `rows` are 0-based data row positions (header excluded), at most the first five; `count` is how many
    rows break the check (default: len(rows)). The message shows the offending values of that column only,
    truncated. For a table read from a CSV file, `lines` are the same rows' line numbers in `file` as a
    person sees them in an editor (the header is line 1), shown beside the row positions.
    """

    def __init__(
        self,
        table: str,
        column: str | None,
        rows: Sequence[int] = (),
        problem: str = "breaks the contract",
        count: int | None = None,
        values: Sequence[object] = (),
        lines: Sequence[int] = (),
        file: str | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.problem = problem
        self.rows = [int(row) for row in rows][:MAX_ROWS]
        self.count = len(self.rows) if count is None else int(count)
        self.values = [_shown(value) for value in values][:MAX_ROWS]
        self.lines = [int(line) for line in lines][:MAX_ROWS]
        self.file = file
        super().__init__(self._message())

    def __reduce__(self):  # picklable across processes (joblib, Spark) despite the custom signature
        return (type(self), (self.table, self.column, self.rows, self.problem, self.count, self.values,
                             self.lines, self.file))

    def in_file(self, file: str | Path) -> ContractError:
        """This error with its rows' line numbers in the CSV file the table was read from."""
        return ContractError(self.table, self.column, self.rows, self.problem, self.count, self.values,
                             csv_lines(file, self.rows), Path(file).name)

    def _message(self) -> str:
        where = self.table if self.column is None else f"{self.table}.{self.column}"
        if not self.rows:
            return f"{where}: {self.problem}"
        first = ", ".join(str(row) for row in self.rows)
        if self.count == 1:
            text = f"{where}: {self.problem} in 1 row, row {first}"
        else:
            text = f"{where}: {self.problem} in {self.count} rows, first rows {first}"
        if self.lines:
            text += (f" ({'line' if len(self.lines) == 1 else 'lines'} {', '.join(map(str, self.lines))} of "
                     f"{self.file})")
        if self.values:
            more = ", ..." if self.count > len(self.values) else ""
            shown = ", ".join(repr(value) for value in self.values)
            text += f" (value{'s' if len(self.values) > 1 else ''} {shown}{more})"
        return text


def csv_lines(file: str | Path, rows: Sequence[int]) -> list[int]:
    """The line (1-based, the header is line 1) on which each data row of a CSV file starts, as an editor
    shows it: blank lines are skipped as the readers skip them, a quoted value may span lines."""
    wanted, found = set(rows), {}
    with open(file, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        row, line, header = -1, 0, True
        for record in reader:
            start, line = line + 1, reader.line_num
            if not record:
                continue
            if header:
                header = False
                continue
            row += 1
            if row in wanted:
                found[row] = start
                if len(found) == len(wanted):
                    break
    return [found[row] for row in rows if row in found]


def _shown(value: object) -> str:
    """A value as it may appear in an error message: text, cut to MAX_VALUE_CHARS."""
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


class _Bad(Exception):
    """Raised by a column check; `_validate_table` turns it into a ContractError with table and column."""

    def __init__(self, problem: str, bad: np.ndarray, raw: pd.Series | None = None) -> None:
        super().__init__(problem)
        self.problem, self.bad, self.raw = problem, bad, raw


@dataclass(frozen=True, eq=False)
class Portfolio:
    """The four contract tables, validated and normalised (build it with `validate` or `read_dir`)."""

    accounts: pd.DataFrame
    installments: pd.DataFrame
    payments: pd.DataFrame
    contacts: pd.DataFrame

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by name, in contract order."""
        return {name: getattr(self, name) for name in TABLES}

    def subset(self, account_ids: Iterable[str] | str) -> Portfolio:
        """Only these accounts' rows, in their original order (ids not in the portfolio are ignored)."""
        wanted = [account_ids] if isinstance(account_ids, str) else list(account_ids)
        return Portfolio(
            **{
                name: frame.loc[frame["account_id"].isin(wanted).to_numpy()].reset_index(drop=True)
                for name, frame in self.tables.items()
            }
        )

    def fingerprint(self) -> str:
        """sha256 of the normalised contents: the same data gives the same digest, whatever file format.

        It covers table names, column names and dtypes, row order and every value, byte for byte
        (text as UTF-8, numbers and instants as their int64/float64 bytes), so it does not depend on
        pandas' internal hashing.
        """
        digest = hashlib.sha256()
        for name, frame in self.tables.items():
            _digest_table(digest, name, frame)
        return digest.hexdigest()

    def table_fingerprints(self) -> dict[str, str]:
        """Each table's own sha256, by the same normalisation as `fingerprint` (for MLflow's datasets)."""
        out = {}
        for name, frame in self.tables.items():
            digest = hashlib.sha256()
            _digest_table(digest, name, frame)
            out[name] = digest.hexdigest()
        return out


def _digest_table(digest, name: str, frame: pd.DataFrame) -> None:
    """Feed one table (its name, row count, column names and dtypes, and values) into `digest`."""
    digest.update(f"table {name} rows {len(frame)}\n".encode())
    for column in frame.columns:
        digest.update(f"column {column} {frame[column].dtype}\n".encode())
        for chunk in _column_bytes(frame[column]):
            digest.update(len(chunk).to_bytes(8, "little"))
            digest.update(chunk)


def _column_bytes(series: pd.Series) -> list[bytes | memoryview]:
    """A normalised column as bytes that depend only on its values: null mask, then the values."""
    null = series.isna().to_numpy()
    if series.dtype == object:
        text = pa.array(series, type=pa.large_string(), from_pandas=True)
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[: len(text) + 1]
        data = text.buffers()[2]
        body = b"" if data is None else memoryview(data)[: int(offsets[-1])]
        return [np.packbits(null).tobytes(), np.ascontiguousarray(offsets).tobytes(), body]
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy()
    if values.dtype.kind == "f":  # one NaN bit pattern, and -0.0 as 0.0
        values = np.where(null, np.nan, values + 0.0)
    return [np.packbits(null).tobytes(), memoryview(np.ascontiguousarray(values).view(np.uint8))]


# ---------------------------------------------------------------------------------------------- validation


def validate(tables: Mapping[str, pd.DataFrame]) -> Portfolio:
    """Check the four tables against the contract and return them normalised; raise on the first problem.

    Extra columns are dropped, absent optional columns are added as nulls, and each returned frame has
    exactly the contract columns in contract order, the rows in the given order and a fresh RangeIndex.
    """
    frames, distinct = {}, {}
    for name in TABLES:
        if name not in tables:
            raise ContractError(name, None, problem="table missing")
        if not isinstance(tables[name], pd.DataFrame):
            raise ContractError(name, None, problem=f"not a DataFrame but {type(tables[name]).__name__}")
        frames[name] = _validate_table(name, tables[name], distinct)
    for table, column, parent, parent_column in REFERENCES:
        codes, uniques = distinct[(table, column)]
        _check_reference(table, column, codes, uniques, frames[parent][parent_column], f"{parent}.{parent_column}")
    return Portfolio(**frames)


def _validate_table(
    name: str, frame: pd.DataFrame, distinct: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
) -> pd.DataFrame:
    """One table: columns present, each column converted and checked, then the keys and paired values.

    The distinct values of each foreign key (codes and uniques) go into `distinct`, so that the
    reference check looks up each distinct value once instead of every row.
    """
    spec = SPEC[name]
    for column, rule in spec.items():
        present = int((frame.columns == column).sum())
        if present > 1:
            raise ContractError(name, column, problem=f"column appears {present} times")
        if rule.required and not present:
            raise ContractError(name, column, problem="required column missing")
    out = {}
    for column, rule in spec.items():
        if column not in frame.columns:
            out[column] = _nulls(rule, len(frame))
            continue
        raw = frame[column].reset_index(drop=True)
        try:
            if rule.kind in ("string", "category"):
                out[column], codes, uniques = _text(_plain(raw), rule)
                if rule.unique:
                    _check_unique(codes, uniques, out[column])
                if (name, column) in _FOREIGN_KEYS:
                    distinct[(name, column)] = codes, uniques
            else:
                out[column] = _CONVERTERS[rule.kind](_plain(raw), rule)
        except _Bad as bad:
            raise _error(name, column, bad) from None
        except (TypeError, ValueError) as err:  # a conversion raised instead of naming rows
            raise _error(name, column, _unreadable(raw, err)) from None
    result = pd.DataFrame(out)
    for table, column, value, other, other_value in PAIRED_VALUES:
        if table == name:
            _check_paired(result, table, column, value, other, other_value)
    return result


def _unreadable(raw: pd.Series, err: Exception) -> _Bad:
    """What to name after a conversion raised instead of naming rows: the cells holding a list, mapping or
    array (parquet allows them), else the column's filled rows, as values of mixed kinds pandas cannot
    read. Only run on failure, so a clean column pays nothing."""
    nested = np.array([isinstance(v, list | tuple | dict | set | np.ndarray) for v in raw], dtype=bool)
    if nested.any():
        return _Bad("not a single value (a list or mapping)", nested, raw)
    return _Bad(f"values of mixed kinds that cannot be read ({type(err).__name__})", raw.notna().to_numpy(), raw)


def _error(table: str, column: str, bad: _Bad) -> ContractError:
    """The ContractError for a failed column check: count, first rows and their raw values."""
    positions = np.flatnonzero(bad.bad)
    rows = positions[:MAX_ROWS]
    values = [] if bad.raw is None else bad.raw.iloc[rows].tolist()
    return ContractError(table, column, rows.tolist(), bad.problem, len(positions), values)


def _plain(raw: pd.Series) -> pd.Series:
    """A column in plain pandas dtypes: pyarrow-backed and categorical columns are unwrapped first."""
    if isinstance(raw.dtype, pd.ArrowDtype):
        return pa.array(raw.array).to_pandas(date_as_object=False)
    if isinstance(raw.dtype, pd.CategoricalDtype):
        return pd.Series(np.asarray(raw, dtype=object), dtype=object)
    return raw


def _nulls(rule: Column, n: int) -> pd.Series:
    """An absent optional column: all null, in the column's normalised dtype."""
    if rule.kind in ("string", "category"):
        return pd.Series(np.full(n, None, dtype=object), dtype=object)
    if rule.kind == "date":
        return pd.Series(np.full(n, np.datetime64("NaT", "ns")))
    if rule.kind == "timestamp":
        return pd.Series(np.full(n, np.datetime64("NaT", "ns"))).dt.tz_localize("UTC")
    if rule.kind == "bool":
        raise ValueError("a bool column cannot be optional: it has no null")
    return pd.Series(np.full(n, np.nan))


def _text(raw: pd.Series, rule: Column) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Text as object of str (None when missing), its codes and distinct values; checks run on the latter."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    if len(uniques) and pd.api.types.infer_dtype(uniques, skipna=False) != "string":
        not_text = [i for i, value in enumerate(uniques) if not isinstance(value, str)]
        raise _Bad("not text", np.isin(codes, not_text), raw)
    missing = codes < 0
    empty = np.flatnonzero(uniques == "")
    if len(empty):
        missing |= np.isin(codes, empty)
    if rule.required and missing.any():
        raise _Bad("missing", missing)
    if rule.values:
        unknown = np.flatnonzero(~pd.Index(uniques, dtype=object).isin(rule.values) & (uniques != ""))
        if len(unknown):
            raise _Bad(f"unknown value, expected one of {', '.join(rule.values)}", np.isin(codes, unknown), raw)
    values = uniques.take(codes) if len(uniques) else np.empty(len(raw), dtype=object)
    values[missing] = None
    return pd.Series(values, dtype=object), codes, uniques


def _bools(raw: pd.Series, rule: Column) -> pd.Series:
    """Flags: numpy bool from bools, 0/1 or the texts true/false/True/False/TRUE/FALSE/1/0; no nulls."""
    if raw.dtype == np.bool_:
        return pd.Series(raw.to_numpy(), dtype=bool)
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    mapped = [_BOOLEANS.get(value) for value in uniques]
    unknown = [i for i, value in enumerate(mapped) if value is None]
    if unknown:
        raise _Bad("not a boolean (true/false/1/0)", np.isin(codes, unknown), raw)
    if (codes < 0).any():
        raise _Bad("missing", codes < 0)
    return pd.Series(np.asarray(mapped, dtype=bool)[codes] if len(mapped) else np.zeros(len(raw), bool))


def _numbers(raw: pd.Series, rule: Column) -> pd.Series:
    """Numbers: finite, inside the column's bounds, whole for ints; int64 when required, else float64."""
    values = _as_float(raw)
    null = np.isnan(values)
    if rule.required and null.any():
        raise _Bad("missing", null)
    with np.errstate(invalid="ignore"):
        if not np.isfinite(values[~null]).all():
            raise _Bad("not a finite number", ~null & ~np.isfinite(values), raw)
        if rule.kind == "int" and (values[~null] % 1 != 0).any():
            raise _Bad("not a whole number", ~null & (values % 1 != 0), raw)
        outside = np.zeros(len(values), dtype=bool)
        if rule.low is not None:
            outside |= values <= rule.low if rule.low_open else values < rule.low
        if rule.high is not None:
            outside |= values > rule.high
    if outside.any():
        raise _Bad(f"out of range (must be {_bounds(rule)})", outside, raw)
    if rule.kind == "int" and rule.required:
        return pd.Series(values.astype(np.int64))
    return pd.Series(values)


def _as_float(raw: pd.Series) -> np.ndarray:
    """A number column as float64 with NaN for null: numeric dtypes as they are, text parsed (CSV)."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise _Bad("not a number", raw.notna().to_numpy(), raw)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) == "boolean":
        raise _Bad("not a number", raw.notna().to_numpy(), raw)
    parsed = pd.to_numeric(raw, errors="coerce")
    values = np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    bad = raw.notna().to_numpy() & np.isnan(values)
    if bad.any():
        raise _Bad("not a number", bad, raw)
    return values


def _bounds(rule: Column) -> str:
    """The domain of a number column in words: '> 0', '>= 0', 'in 1..180', 'in (0, 1]'."""
    if rule.high is None:
        return f"{'>' if rule.low_open else '>='} {rule.low:g}"
    if rule.low_open:
        return f"in ({rule.low:g}, {rule.high:g}]"
    return f"in {rule.low:g}..{rule.high:g}"


def _dates(raw: pd.Series, rule: Column) -> pd.Series:
    """Calendar dates: ISO 'YYYY-MM-DD' text, dates or naive datetimes at midnight -> datetime64[ns]."""
    parsed = _object_datetimes(raw) if raw.dtype == object else raw
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        raise _Bad("a timestamp with a time zone, not a date", raw.notna().to_numpy(), raw)
    if not pd.api.types.is_datetime64_dtype(parsed.dtype):
        _check_text(raw, _ISO_DATE, "not an ISO date (YYYY-MM-DD)")
        parsed = pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")
        _check_parsed(raw, parsed, "not a valid calendar date")
    values = _as_ns(parsed, raw)
    null = np.isnat(values)
    if rule.required and null.any():
        raise _Bad("missing", null)
    off_midnight = ~null & (values.view(np.int64) % _DAY_NS != 0)
    if off_midnight.any():
        raise _Bad("has a time of day (a date must be at midnight)", off_midnight, raw)
    return pd.Series(values)


def _timestamps(raw: pd.Series, rule: Column) -> pd.Series:
    """Instants: ISO 8601 text with an offset (or Z) or tz-aware datetimes -> datetime64[ns, UTC]."""
    parsed = _object_datetimes(raw) if raw.dtype == object else raw
    if pd.api.types.is_datetime64_dtype(parsed.dtype):
        raise _Bad("timestamp without a UTC offset", raw.notna().to_numpy(), raw)
    if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        text_ok = _matches(raw, _ISO_TIMESTAMP)
        if not text_ok.all():
            naive = ~text_ok & _matches(raw, _ISO_NAIVE)
            if naive.any():
                raise _Bad("timestamp without a UTC offset", naive, raw)
            raise _Bad("not an ISO 8601 timestamp with offset", ~text_ok, raw)
        parsed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
        _check_parsed(raw, parsed, "not a valid timestamp")
    values = _as_ns(parsed.dt.tz_convert("UTC").dt.tz_localize(None), raw)
    null = np.isnat(values)
    if rule.required and null.any():
        raise _Bad("missing", null)
    return pd.Series(values).dt.tz_localize("UTC")


def _object_datetimes(raw: pd.Series) -> pd.Series:
    """An object column of date or datetime objects as a datetime64 column; any other column unchanged."""
    if pd.api.types.infer_dtype(raw, skipna=True) not in ("date", "datetime", "datetime64"):
        return raw
    aware = [getattr(value, "tzinfo", None) is not None for value in raw.dropna()]
    if any(aware) and not all(aware):
        mixed = raw.map(lambda value: getattr(value, "tzinfo", 0) is None).to_numpy(dtype=bool)
        raise _Bad("timestamp without a UTC offset", mixed, raw)
    return pd.to_datetime(raw, utc=any(aware))


def _matches(raw: pd.Series, pattern: str) -> np.ndarray:
    """Which values are text matching the pattern (RE2, run by pyarrow); nulls match, non-text does not."""
    is_text = np.ones(len(raw), dtype=bool)
    try:
        text = pa.array(raw, type=pa.string(), from_pandas=True)
    except pa.ArrowException:  # numbers or objects among the values: only the text can match
        is_text = raw.map(lambda value: isinstance(value, str), na_action="ignore").fillna(True).to_numpy(bool)
        text = pa.array(raw.astype(object).where(is_text, None), type=pa.string(), from_pandas=True)
    return pc.match_substring_regex(text, pattern).fill_null(True).to_numpy(zero_copy_only=False) & is_text


def _check_text(raw: pd.Series, pattern: str, problem: str) -> None:
    """Raise the problem naming the values that are not text matching the pattern."""
    ok = _matches(raw, pattern)
    if not ok.all():
        raise _Bad(problem, ~ok, raw)


def _check_parsed(raw: pd.Series, parsed: pd.Series, problem: str) -> None:
    """Raise when a value that was there did not survive parsing (a 13th month, a 25th hour)."""
    lost = raw.notna().to_numpy() & parsed.isna().to_numpy()
    if lost.any():
        raise _Bad(problem, lost, raw)


def _as_ns(parsed: pd.Series, raw: pd.Series) -> np.ndarray:
    """Naive datetimes as datetime64[ns], raising for those outside its range."""
    values = parsed.to_numpy()
    outside = ~np.isnat(values) & ((values < _FIRST_DAY) | (values >= _PAST_LAST_DAY))
    if outside.any():
        raise _Bad(
            f"outside the supported years {_FIRST_DAY.item().year}..{_PAST_LAST_DAY.item().year - 1}",
            outside,
            raw,
        )
    return values.astype("datetime64[ns]")


def _check_unique(codes: np.ndarray, uniques: np.ndarray, values: pd.Series) -> None:
    """A key column: every value once (as many distinct values as present ones); names every repeat."""
    present = codes >= 0
    if len(uniques) == present.sum():
        return
    repeated = present & (np.bincount(codes[present], minlength=len(uniques))[codes] > 1)
    raise _Bad("duplicate key", repeated, values)


def _check_paired(frame: pd.DataFrame, table: str, column: str, value: str, other: str, other_value: str) -> None:
    """`value` in `column` if and only if `other_value` in `other` (outcome held_out <-> channel none)."""
    mismatch = (frame[column] == value).to_numpy() != (frame[other] == other_value).to_numpy()
    if mismatch.any():
        positions = np.flatnonzero(mismatch)
        first = frame.iloc[positions[:MAX_ROWS]]
        pairs = [f"{mine} with {other} {theirs}" for mine, theirs in zip(first[column], first[other], strict=True)]
        problem = f"{column} {value} must go with {other} {other_value}, and only with it"
        raise ContractError(table, column, positions[:MAX_ROWS], problem, len(positions), pairs)


def _check_reference(
    table: str, column: str, codes: np.ndarray, uniques: np.ndarray, keys: pd.Series, parent: str
) -> None:
    """Every distinct value of a foreign key (codes into uniques) exists in its parent's key column."""
    orphans = np.flatnonzero(~pd.Index(uniques, dtype=object).isin(keys.to_numpy()))
    if len(orphans):
        orphan = np.isin(codes, orphans)
        values = pd.Series(uniques.take(codes[orphan][:MAX_ROWS]))
        positions = np.flatnonzero(orphan)
        raise ContractError(
            table,
            column,
            positions[:MAX_ROWS],
            f"not found in {parent}",
            len(positions),
            values.tolist(),
        )


_CONVERTERS = {  # text and categories go through `_text`, which also gives their distinct values
    "bool": _bools,
    "int": _numbers,
    "float": _numbers,
    "date": _dates,
    "timestamp": _timestamps,
}


# ---------------------------------------------------------------------------------------------- files


def read_dir(path: str | Path) -> Portfolio:
    """Read and validate a directory holding accounts, installments, payments and contacts.

    Each table is one file, `<table>.parquet` or `<table>.csv` (the formats may differ between tables);
    a table that is missing, or present in both formats, is a ContractError.
    """
    return validate_tables(read_dir_tables(path))


def validate_tables(tables: Mapping[str, pa.Table]) -> Portfolio:
    """`validate` for tables as read into Arrow (by `read_dir_tables`, or from a database); an error in a
    table read from a CSV file names the file's lines beside the row positions."""
    try:
        return validate({name: table.to_pandas(date_as_object=False) for name, table in tables.items()})
    except ContractError as err:
        table = tables.get(err.table)
        meta = (table.schema.metadata or {}) if isinstance(table, pa.Table) else {}
        if err.rows and SOURCE_FILE in meta:
            raise err.in_file(meta[SOURCE_FILE].decode()) from None
        raise


# ---------------------------------------------------------------------------------------------- Arrow, checked in place


def _texty(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _arrow_column_ok(values: pa.ChunkedArray, rule: Column) -> bool:
    """Whether `validate` would accept this Arrow column as it is and read it without changing a value: the
    column is in the contract's own Arrow type (text, bool, int64 or float64, date32 or timestamp[ns] for a
    date, tz-aware timestamp[ns] for an instant) and passes the same checks. False means "not sure": the
    caller then validates the ordinary way, which accepts it or names the rows."""
    kind, n = values.type, len(values)
    if rule.kind in ("string", "category"):
        if not _texty(kind):
            return False
        if rule.required and (values.null_count or (n and pc.any(pc.equal(values, "")).as_py())):
            return False
        if rule.values and n and not pc.all(pc.or_(pc.is_null(values), pc.is_in(
                values, value_set=pa.array([*rule.values, ""])))).as_py():
            return False
        return not rule.unique or (not values.null_count and all_distinct(values))
    if rule.kind == "bool":
        return pa.types.is_boolean(kind) and not values.null_count
    if rule.kind in ("int", "float"):
        if not (kind == pa.int64() or kind == pa.float64()):
            return False
        numbers = values.to_numpy() if not values.null_count else values.to_pandas()
        try:
            _numbers(pd.Series(np.asarray(numbers, dtype=np.float64)), rule)
        except _Bad:
            return False
        return True
    if rule.kind == "date":
        if kind == pa.date32():
            days = values.cast(pa.int32()).to_numpy(zero_copy_only=False)  # nulls as 0: checked apart
            first, past = (int(d.astype("datetime64[D]").astype(np.int64)) for d in (_FIRST_DAY, _PAST_LAST_DAY))
            return not (rule.required and values.null_count) and bool(((days >= first) & (days < past)).all())
        if not (pa.types.is_timestamp(kind) and kind.tz is None and kind.unit == "ns"):
            return False
        ns = _arrow_ns(values)
        return not (rule.required and values.null_count) and bool((ns % _DAY_NS == 0).all()) and _in_ns_range(ns)
    if rule.kind == "timestamp":
        if not (pa.types.is_timestamp(kind) and kind.tz is not None and kind.unit == "ns"):
            return False
        return not (rule.required and values.null_count) and _in_ns_range(_arrow_ns(values))
    return False


def all_distinct(values: pa.ChunkedArray | pa.Array) -> bool:
    """Whether no two values of a column without nulls are equal: at once when they strictly ascend (keys
    exported in order), else by a hash set of them."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if len(values) < 2 or pc.all(pc.greater(values[1:], values[:-1])).as_py():
        return True
    return len(pc.unique(values)) == len(values)


def _arrow_ns(values: pa.ChunkedArray) -> np.ndarray:
    """A timestamp[ns] column's int64 values (UTC for an aware one), nulls as the first supported day."""
    ns = values.cast(pa.int64())
    if values.null_count:
        ns = pc.fill_null(ns, int(_FIRST_DAY.astype("datetime64[ns]").astype(np.int64)))
    return ns.to_numpy()


def _in_ns_range(ns: np.ndarray) -> bool:
    """Every instant inside the supported years (as `_as_ns` checks them)."""
    if not len(ns):
        return True
    first, past = (int(d.astype("datetime64[ns]").astype(np.int64)) for d in (_FIRST_DAY, _PAST_LAST_DAY))
    return bool(ns.min() >= first and ns.max() < past)


def accepts_arrow(tables: Mapping[str, pa.Table], account_rows: Mapping[str, np.ndarray] | None = None) -> bool:
    """True when `validate_tables(tables)` would return these Arrow tables with every value as it is: each
    table present, each column in the contract's own Arrow type (as parquet written by `write_dir` or the
    simulator holds them) and passing every check, keys unique, references and paired values in order. The
    nightly batch then prepares the tables straight from Arrow (`features.prepare_arrow`), never building
    the pandas frames. False is not an error: it means "validate the ordinary way", which either accepts
    the tables (text in a CSV file, other types) or raises the ContractError naming table, column and rows.

    `account_rows` (each child table's rows' positions in `accounts`, found by the caller with the key column
    in the accounts' Arrow type) stands for the reference checks: a row with an account there has a key that
    is present, not empty and known."""
    if any(not isinstance(tables.get(name), pa.Table) for name in TABLES):
        return False
    resolved = {(table, column) for table, column, _, _ in REFERENCES
                if account_rows is not None and len(account_rows.get(table, ())) == tables[table].num_rows
                and tables[table][column].type == tables["accounts"]["account_id"].type}
    for name in TABLES:
        table, names = tables[name], tables[name].column_names
        if len(set(names)) != len(names):
            return False
        for column, rule in SPEC[name].items():
            if column not in names:
                if rule.required or rule.kind == "bool":
                    return False
                continue
            if (name, column) not in resolved and not _arrow_column_ok(table[column], rule):
                return False
    for table, column, parent, parent_column in REFERENCES:
        child, keys = tables[table][column], tables[parent][parent_column]
        if (table, column) not in resolved and len(child) and (
                child.type != keys.type or pc.index_in(child, value_set=keys.combine_chunks()).null_count):
            return False
    for table, column, value, other, other_value in PAIRED_VALUES:
        frame = tables[table]
        if frame.num_rows and not pc.all(pc.equal(pc.equal(frame[column], value),
                                                  pc.equal(frame[other], other_value))).as_py():
            return False
    return True


def read_dir_tables(path: str | Path) -> dict[str, pa.Table]:
    """The four tables of a directory as read, not yet validated (Arrow, contract columns only); the nightly
    batch reads them so and validates them in chunks, `read_dir` all at once."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no directory {path}")
    tables = {}
    for name in TABLES:
        found = [path / f"{name}.{fmt}" for fmt in FORMATS if (path / f"{name}.{fmt}").is_file()]
        if not found:
            raise ContractError(name, None, problem=f"table missing: no {name}.parquet or {name}.csv in {path}")
        if len(found) > 1:
            raise ContractError(
                name, None, problem=f"table present twice: both {name}.parquet and {name}.csv in {path}"
            )
        tables[name] = _read_table(name, found[0])
    return tables


def _read_table(name: str, file: Path) -> pa.Table:
    """One table file as read, contract columns only: parquet in its own types, CSV all as text."""
    try:
        if file.suffix == ".parquet":
            columns = [column for column in pq.read_schema(file).names if column in SPEC[name]]
            return pq.read_table(file, columns=columns)
        with open(file, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
        columns = [column for column in SPEC[name] if column in header]
        twice = [column for column in columns if header.count(column) > 1]
        if not columns:  # none of the contract's columns: validate names the first one missing
            return pa.table({})
        if not twice:
            convert = pv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),
                include_columns=columns,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            )
            parse = pv.ParseOptions(newlines_in_values=True)
            table = pv.read_csv(file, parse_options=parse, convert_options=convert)
            return table.replace_schema_metadata({SOURCE_FILE: str(file).encode()})
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ContractError(name, None, problem=f"cannot read {file.name}: {exc}") from exc
    raise ContractError(name, twice[0], problem=f"column appears {header.count(twice[0])} times in {file.name}")


def write_dir(portfolio: Portfolio, path: str | Path, fmt: str = "parquet") -> None:
    """Write the four tables as `<table>.<fmt>` so that `read_dir` gives back exactly the same portfolio.

    Parquet keeps the types (dates as date32, timestamps as UTC nanoseconds). CSV writes dates as
    YYYY-MM-DD, timestamps as ISO 8601 in UTC with offset +00:00 (to the second when that is exact,
    else to the ms, us or ns), flags as true/false, numbers in their shortest exact form, nulls as empty
    fields and text quoted. A file of the same table in the other format is removed, so that the
    directory stays readable; each file is written aside first and then renamed into place.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, frame in portfolio.tables.items():
        table = _to_arrow(name, frame)
        if fmt == "parquet":
            replace_atomically(path / f"{name}.{fmt}", lambda tmp, table=table: pq.write_table(table, tmp))
        else:
            replace_atomically(path / f"{name}.{fmt}", lambda tmp, table=table, name=name: pv.write_csv(
                _as_text(name, table), tmp, pv.WriteOptions(quoting_style="needed")))
        for other in FORMATS:
            if other != fmt:
                (path / f"{name}.{other}").unlink(missing_ok=True)


def _to_arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    """A normalised table as an arrow table with the contract's file types."""
    arrays = {}
    for column, rule in SPEC[name].items():
        values = frame[column]
        if rule.kind in ("string", "category"):
            arrays[column] = pa.array(values, type=pa.string(), from_pandas=True)
        elif rule.kind == "date":
            days = values.to_numpy().astype("datetime64[D]")
            arrays[column] = pa.array(days, type=pa.date32(), from_pandas=True)
        elif rule.kind == "timestamp":
            utc = values.dt.tz_localize(None).to_numpy()
            arrays[column] = pa.array(utc, type=pa.timestamp("ns", tz="UTC"), from_pandas=True)
        else:
            arrays[column] = pa.array(values.to_numpy(), from_pandas=True)
    return pa.table(arrays)


def _as_text(name: str, table: pa.Table) -> pa.Table:
    """The arrow table with its dates and timestamps as ISO 8601 text, for CSV."""
    for column, rule in SPEC[name].items():
        if rule.kind == "date":
            text = table[column].cast(pa.string())
        elif rule.kind == "timestamp":
            text = _iso_utc(table[column])
        else:
            continue
        table = table.set_column(table.schema.get_field_index(column), column, text)
    return table


def _iso_utc(instants: pa.ChunkedArray) -> pa.ChunkedArray:
    """UTC instants as 'YYYY-MM-DDTHH:MM:SS[.fff...]+00:00', in the coarsest unit that is still exact."""
    for unit in ("s", "ms", "us", "ns"):
        try:
            naive = instants.cast(pa.timestamp(unit), safe=True)  # the UTC wall clock
            break
        except pa.ArrowInvalid:
            continue
    text = pc.binary_replace_slice(naive.cast(pa.string()), 10, 11, "T")
    return pc.binary_join_element_wise(text, "+00:00", "")
