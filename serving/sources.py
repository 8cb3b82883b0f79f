"""Where the nightly batch reads the four contract tables from, and how it cuts them into chunks of accounts.

A source is a directory (`<table>.parquet` or `<table>.csv`, as `models.contract.read_dir` reads it) or a
SQLAlchemy URL (`sqlite:///portfolio.db`, `postgresql+psycopg://user@host/db`) holding tables named
`accounts`, `installments`, `payments` and `contacts`. Either way the tables are first read as Arrow tables,
which hold a million accounts' 42 million rows in about 2 GiB, and then cut into chunks of accounts: each
chunk is converted to pandas and validated on its own by `models.contract.validate`, so the Python objects of
the whole portfolio never exist at once.

Chunks follow the order of the accounts table (by `account_id` for a database, whose row order is not
guaranteed), and every child row goes to its account's chunk, keeping its order. A database's rows are read
ordered by every contract column, so a resumed run sees the same chunks with the same fingerprints.

What chunk-wise validation cannot see (a key repeated in two chunks, a child row of an unknown account) is
checked on the Arrow tables first. Whenever a check fails, the whole input is validated the ordinary way, so
that the error is exactly the one `read_dir` gives: table, column, count and the first rows in the table's
order (for a database, the order it is read in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models.contract import (
    SPEC,
    ContractError,
    Portfolio,
    accepts_arrow,
    all_distinct,
    read_dir_tables,
    validate_tables,
)
from models.features import FeatureConfig, Prepared, prepare, prepare_arrow
from models.registry import hide_password
from models.vocab import CHILD_TABLES, TABLES

TIME_COLUMNS = {"payments": "paid_at", "contacts": "contacted_at"}
SQL_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class Chunk:
    """One chunk of accounts: its tables as read (checked against the contract), where its rows sit in the
    tables as read, and the fingerprint of its rows as read (the same rows in the same order give the same
    digest). `portfolio` is the validated pandas form (built on first use when the Arrow tables were
    accepted as they are); `prepare` gives the scoring arrays, straight from Arrow when it can."""

    index: int
    tables: dict[str, pa.Table]
    positions: dict[str, np.ndarray]
    fingerprint: str
    account_rows: dict[str, np.ndarray] | None = None  # child rows' account positions in the chunk (Arrow path)
    validated: Portfolio | None = None  # the pandas form, when the tables went the ordinary way

    @property
    def accounts(self) -> int:
        return self.tables["accounts"].num_rows

    @cached_property
    def portfolio(self) -> Portfolio:
        return self.validated if self.validated is not None else validate_tables(self.tables)

    def prepare(self, config: FeatureConfig) -> Prepared:
        """`features.prepare(self.portfolio, config)`, from the Arrow tables when they were accepted as read."""
        if self.validated is not None:
            return prepare(self.validated, config)
        return prepare_arrow(self.tables, config, self.account_rows)


def is_url(location: str | Path) -> bool:
    """A URL (`scheme://...`) rather than a local directory."""
    return "://" in str(location)


def is_database(location: str | Path) -> bool:
    """A SQLAlchemy URL of an installed dialect (as opposed to an hdfs:// or s3a:// path)."""
    if not is_url(location):
        return False
    try:
        make_url(str(location)).get_dialect()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
        return False
    return True


def describe(location: str | Path) -> str:
    """The source for messages and the summary: a URL without its password."""
    return hide_password(str(location))


def read_tables(location: str | Path) -> dict[str, pa.Table]:
    """The four tables as Arrow tables, contract columns only, from a directory or a SQLAlchemy URL."""
    if is_database(location):
        tables = read_sql_tables(str(location))
    elif is_url(location):
        raise ContractError("source", None, problem=f"cannot read {describe(location)}: the local engine reads a "
                            "directory of parquet or CSV files, or a database by SQLAlchemy URL (such as "
                            "postgresql+psycopg://...); a Hadoop path (hdfs://, s3a://) needs --engine spark")
    else:
        tables = read_dir_tables(Path(location))
    return {name: _decoded(table) for name, table in tables.items()}


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (parquet written from pandas categoricals) as plain columns."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table[field.name].cast(field.type.value_type))
    return table


# ---------------------------------------------------------------------------------------------- databases


def read_sql_tables(url: str) -> dict[str, pa.Table]:
    """The four tables of a database, streamed in batches into Arrow; rows ordered by every contract column."""
    engine = sa.create_engine(url)
    try:
        present = {name.lower(): name for name in sa.inspect(engine).get_table_names()}
        tables = {}
        with engine.connect() as conn:
            for name in TABLES:
                if name not in present:
                    raise ContractError(name, None, problem=f"table missing: no table {name} in {describe(url)}")
                tables[name] = _read_sql_table(conn, engine, present[name], name)
        return tables
    except sa.exc.SQLAlchemyError as err:
        raise ContractError("source", None, problem=f"cannot read {describe(url)}: {type(err).__name__}") from None
    finally:
        engine.dispose()


def _read_sql_table(conn: sa.Connection, engine: sa.Engine, table_name: str, name: str) -> pa.Table:
    """SELECT the contract columns the table has, ORDER BY all of them, as an Arrow table."""
    have = {c["name"].lower(): c["name"] for c in sa.inspect(engine).get_columns(table_name)}
    columns = [c for c in SPEC[name] if c in have]
    if not columns:
        return pa.table({})
    table = sa.table(table_name, *(sa.column(have[c]) for c in columns))
    order = [table.c[have["account_id"]]] if name == "accounts" and "account_id" in have else list(table.c)
    query = sa.select(*(table.c[have[c]].label(c) for c in columns)).order_by(*order)
    result = conn.execution_options(stream_results=True, yield_per=SQL_BATCH_ROWS).execute(query)
    batches = [_arrow_batch(columns, rows) for rows in result.partitions(SQL_BATCH_ROWS)]
    if not batches:
        return pa.table({c: pa.array([], type=pa.string()) for c in columns})
    return pa.concat_tables(batches, promote_options="permissive")


def _arrow_batch(columns: list[str], rows: list) -> pa.Table:
    """Rows as an Arrow table: each column in the type its values have (decimals as float64), or as text
    when the database holds mixed kinds of values in one column (SQLite can), for validate to judge."""
    arrays = {}
    for i, column in enumerate(columns):
        values = [row[i] for row in rows]
        try:
            array = pa.array(values, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        if pa.types.is_decimal(array.type):
            array = array.cast(pa.float64())
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        arrays[column] = array
    return pa.table(arrays)


def write_sql(portfolio: Portfolio, url: str, chunk_rows: int = 50_000) -> None:
    """Load a validated portfolio into a database as the four contract tables (replacing them), in the types
    a team would use: PostgreSQL `date` and `timestamptz`; SQLite ISO 8601 text (it has no time zones)."""
    engine = sa.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        for name, frame in portfolio.tables.items():
            out, types = frame.copy(), {}
            for column, rule in SPEC[name].items():
                if rule.kind == "timestamp":
                    out[column] = _iso_text(frame[column]) if sqlite else frame[column]
                    types[column] = sa.Text() if sqlite else sa.DateTime(timezone=True)
                elif rule.kind == "date":
                    out[column] = frame[column].dt.strftime("%Y-%m-%d") if sqlite else frame[column].dt.date
                    types[column] = sa.Text() if sqlite else sa.Date()
                else:
                    types[column] = {"int": sa.BigInteger(), "float": sa.Float(), "bool": sa.Boolean()}.get(
                        rule.kind, sa.Text())
            out.to_sql(name, engine, if_exists="replace", index=False, dtype=types, chunksize=chunk_rows)
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{name}_account ON {name} (account_id)"))
    finally:
        engine.dispose()


def _iso_text(instants: pd.Series) -> pd.Series:
    """UTC instants as ISO 8601 text with an explicit +00:00 offset (None for missing)."""
    text = instants.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return text.astype(object).where(instants.notna(), None)


# ---------------------------------------------------------------------------------------------- chunks


def _key_ok(table: pa.Table, column: str) -> bool:
    """The column is present, text, without nulls, and every value is distinct."""
    if column not in table.column_names:
        return False
    values = table[column]
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) or values.null_count:
        return False
    return all_distinct(values)


def _account_rows(tables: dict[str, pa.Table]) -> dict[str, np.ndarray] | None:
    """Each row's account position in the accounts table (accounts by position, child rows by their
    account), or None when a key is missing, repeated or unknown (the caller then validates everything to
    name the fault)."""
    accounts = tables["accounts"]
    if not _key_ok(accounts, "account_id") or not _key_ok(tables["contacts"], "contact_id"):
        return None
    out = {"accounts": np.arange(accounts.num_rows, dtype=np.int64)}
    ids = accounts["account_id"]
    for name in CHILD_TABLES:
        if "account_id" not in tables[name].column_names:
            return None
        child = tables[name]["account_id"]
        if child.type != ids.type:
            child = child.cast(ids.type) if pa.types.is_string(child.type) or pa.types.is_large_string(
                child.type) else None
        if child is None:
            return None
        where = pc.index_in(child, value_set=ids.combine_chunks())
        if where.null_count:
            return None
        out[name] = where.to_numpy(zero_copy_only=False).astype(np.int64)
    return out


def chunks(tables: dict[str, pa.Table], size: int) -> Iterator[Chunk]:
    """The portfolio in validated chunks of at most `size` accounts; raises the ContractError `read_dir`
    would raise when the input breaks the contract. A chunk whose tables `accepts_arrow` takes as they are is
    not converted to pandas; any other goes through `validate_tables`."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    account_of = _account_rows(tables)
    if account_of is None:
        validate_tables(tables)  # raises the exact error
        raise ContractError("accounts", "account_id", problem="keys could not be matched across tables")
    count = n_chunks(tables, size)
    order, bounds = {}, {}
    for name in TABLES:
        codes = account_of[name] // size
        order[name] = _stable_order(codes)
        bounds[name] = np.searchsorted(codes if order[name] is None else codes[order[name]], np.arange(count + 1))
        if order[name] is None:
            order[name] = np.arange(len(codes))
    for k in range(count):
        positions = {name: order[name][bounds[name][k]:bounds[name][k + 1]] for name in TABLES}
        parts = {name: _rows(tables[name], positions[name]) for name in TABLES}
        rows = {name: account_of[name][positions[name]] - k * size for name in CHILD_TABLES}
        if accepts_arrow(parts, rows):
            yield Chunk(k, parts, positions, fingerprint(parts), account_rows=rows)
            continue
        try:
            portfolio = validate_tables(parts)
        except ContractError:
            validate_tables(tables)  # the error with the whole input's counts and first rows
            raise
        yield Chunk(k, parts, positions, fingerprint(parts), validated=portfolio)


def _stable_order(codes: np.ndarray) -> np.ndarray | None:
    """`np.argsort(codes, kind="stable")`, or None when the codes already ascend (rows grouped by account in
    the accounts' order, as an export usually is): the stable sort would leave them as they are."""
    if len(codes) < 2 or not (codes[1:] < codes[:-1]).any():
        return None
    return np.argsort(codes, kind="stable")


def _rows(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The table's rows at `positions` (ascending, from a stable sort): a zero-copy slice when they are
    consecutive, else a take."""
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1:
        return table.slice(int(positions[0]), len(positions))
    return table.take(positions)


def fingerprint(tables: dict[str, pa.Table]) -> str:
    """sha256 of Arrow tables as read: names, types, null masks and values (nulls filled, so the bytes a
    reader leaves under a null never count); the cheap digest a resumed run compares chunks by."""
    digest = hashlib.sha256()
    for name, table in tables.items():
        digest.update(f"table {name} rows {table.num_rows}\n".encode())
        for column in table.column_names:
            values = table[column].combine_chunks()
            digest.update(f"column {column} {values.type}\n".encode())
            digest.update(np.packbits(values.is_null().to_numpy(zero_copy_only=False)).tobytes())
            if pa.types.is_null(values.type):  # a column empty in every row (a first export's propensity): no values
                continue
            if values.null_count:
                values = pc.fill_null(values, pa.scalar("" if _texty(values.type) else 0).cast(values.type))
            for part in _value_bytes(values):
                digest.update(len(part).to_bytes(8, "little"))
                digest.update(part)
    return digest.hexdigest()


def _value_bytes(values: pa.Array) -> list:
    """The values of an array without nulls, as bytes that depend on nothing but the values."""
    if not _texty(values.type):
        return [np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).view(np.uint8).data]
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=width)[values.offset:values.offset + len(values) + 1]
    data = values.buffers()[2]
    body = b"" if data is None or not len(values) else memoryview(data)[int(offsets[0]):int(offsets[-1])]
    return [np.ascontiguousarray(offsets - offsets[0]).tobytes(), body]


def _texty(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def n_chunks(tables: dict[str, pa.Table], size: int) -> int:
    """How many chunks of `size` accounts the accounts table makes."""
    return max(1, -(-tables["accounts"].num_rows // size))


def latest_event(tables: dict[str, pa.Table]) -> pd.Timestamp | None:
    """The latest payment or contact instant (the default as-of is `models.as_of.default_as_of` of it), or None
    when there is none; a column that is not a readable instant raises the contract's error for it."""
    latest = []
    for name, column in TIME_COLUMNS.items():
        if column not in tables[name].column_names or not tables[name].num_rows:
            continue
        values = tables[name][column]
        if pa.types.is_timestamp(values.type) and values.type.tz is not None:
            top = pc.max(values).as_py()
            latest.append(pd.Timestamp(top) if top is not None else None)
            continue
        parsed = pd.to_datetime(values.to_pandas(), format="ISO8601", utc=True, errors="coerce")
        if parsed.isna().sum() > values.null_count:
            validate_tables(tables)  # names the unreadable rows
        latest.append(parsed.max())
    latest = [t for t in latest if t is not None and pd.notna(t)]
    return max(latest) if latest else None
