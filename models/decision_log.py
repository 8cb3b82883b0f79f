"""The decision log: every decision the API or the batch makes, appended to a SQL table before it is answered.

SQLAlchemy Core over a SQLite file (the default) or PostgreSQL (`postgresql+psycopg://...`). COMPLIANCE.md keeps
every recommendation with its inputs, rules evaluated and answer (10 years under jp, 3 under us), so the log only
appends: nothing here updates or deletes a record, and an in-memory SQLite URL is refused.

Decision ids are deterministic (same account, inputs, as-of, model and policy -> same id), so `decision_id` is
indexed but not unique: a surrogate `record_id` is the key and `get` returns the latest record with a count.

Idempotency: a unique constraint on (caller, idempotency_key, request_position), where request_position is the
record's index within its `append` call. Records without a key store NULL there, and NULLs never collide (SQLite
and PostgreSQL alike), so only keyed requests are constrained. A replay is answered from `find_idempotent` without
scoring or writing; two identical requests racing past that check both try to insert position 0, the database lets
exactly one commit, and the other's whole transaction rolls back and `append` raises `IdempotencyConflict` carrying
the winner's answers, which the caller returns instead of its own, when both asked the same (same fingerprint);
a race lost to a different request under the key is `IdempotencyMismatch`, never the winner's answers.

A PostgreSQL server that hangs (up, its port accepting, nothing answering) is not bounded by its own
statement_timeout, and TCP keepalives are answered by its kernel: each call therefore has a deadline of its own
(the statement timeout plus a second), and a call still waiting at it cuts the engine's connections (socket
shutdown), so every caller blocked on them gets an error (503) instead of waiting as long as the server hangs.

Tamper evidence: records are chained per partition (tenant and rule profile): each carries its sequence number
in the partition, the hash of the previous record (`prev_hash`) and its own (`record_hash`, SHA-256 of its
fields, sequence and prev_hash), and `chain_heads` keeps each partition's last hash, so an edited, removed or
inserted record, or a removed tail, breaks the chain that `verify` walks. An append locks its partition's
head row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the write lock taken by the head's INSERT OR IGNORE), so
concurrent writers (workers, the batch) chain one after the other. `purge` is the one delete: per rule profile,
the records past their retention (RETENTION_YEARS: jp 10, us 3), only as a prefix of each chain, whose last
hash becomes the partition's anchor.

Errors never carry record contents: engines hide bound parameters, and the exceptions raised here name only the
error class and SQLSTATE (PostgreSQL's DETAIL can quote a whole failing row).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine, make_url

log = logging.getLogger("cureflow.decisions")

SOURCES = ("api", "batch")
SYNC_MODES = ("full", "normal")
CREATE_TRIES = 5  # two tables and their indexes: each can be lost to a process creating it at the same time
T = TypeVar("T")


class IdempotencyMismatch(ValueError):
    """An Idempotency-Key already recorded with a different request: the client reused a key (answer 422)."""

    def __init__(self, caller: str, key: str):
        super().__init__("this Idempotency-Key was already used with a different request")
        self.caller, self.key = caller, key


class DecisionLogUnavailable(RuntimeError):
    """A write or read could not reach the database (or the database refused the write): answer 503."""


class DecisionRejected(DecisionLogUnavailable):
    """The database refused the records (a constraint or a value): nothing was written. Still a 503 for callers."""


class IdempotencyConflict(RuntimeError):
    """Another request with the same caller and Idempotency-Key committed first; `answers` are the ones it stored."""

    def __init__(self, caller: str, key: str, answers: list[dict[str, Any]]):
        super().__init__("a request with this Idempotency-Key was recorded first")
        self.caller, self.key, self.answers = caller, key, answers


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the offset; it is put back on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("record_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("decision_id", sa.String(), nullable=False, index=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("caller", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("as_of", sa.String(), nullable=False),
    sa.Column("account_id", sa.String(), nullable=False, index=True),
    sa.Column("model_version", sa.String(), nullable=False),
    sa.Column("run_id", sa.String(), nullable=True),
    sa.Column("policy_version", sa.String(), nullable=False),
    sa.Column("features", sa.JSON(), nullable=False),
    sa.Column("answer", sa.JSON(), nullable=False),
    sa.Column("rules_evaluated", sa.JSON(), nullable=False),
    sa.Column("propensity", sa.Float(), nullable=True),
    sa.Column("idempotency_key", sa.String(), nullable=True),
    sa.Column("request_position", sa.Integer(), nullable=False),
    sa.Column("request_fingerprint", sa.String(), nullable=True),
    sa.Column("tenant", sa.String(), nullable=True),  # NULL: recorded before tenants, read as DEFAULT_TENANT
    sa.Column("profile", sa.String(), nullable=True),  # the rule profile (retention); NULL: before chains
    sa.Column("chain_partition", sa.String(), nullable=True, index=True),
    sa.Column("chain_seq", sa.BigInteger(), nullable=True),
    sa.Column("prev_hash", sa.String(), nullable=True),
    sa.Column("record_hash", sa.String(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.CheckConstraint("source IN ('api', 'batch')", name="ck_decisions_source"),
    sa.UniqueConstraint("caller", "idempotency_key", "request_position", name="uq_decisions_idempotency"),
)

chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("chain_partition", sa.String(), primary_key=True),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("last_hash", sa.String(), nullable=False),
    sa.Column("anchor_seq", sa.BigInteger(), nullable=False),  # the chain starts after it (0: nothing purged)
    sa.Column("anchor_hash", sa.String(), nullable=False),  # the prev_hash of the first record kept
)
GENESIS = ""  # the prev_hash of a partition's first record
_MOVE_HEAD = (chain_heads.update().where(chain_heads.c.chain_partition == sa.bindparam("part"))
              .values(last_seq=sa.bindparam("seq"), last_hash=sa.bindparam("hash")))
RETENTION_YEARS = {"jp": 10, "us": 3}  # COMPLIANCE.md: 貸金業法 19条 (jp), Regulation F 1006.100 (us)
HASHED_COLUMNS = ("decision_id", "request_id", "caller", "as_of", "account_id", "model_version", "run_id",
                  "policy_version", "features", "answer", "rules_evaluated", "propensity", "source",
                  "idempotency_key", "request_fingerprint", "tenant", "profile", "request_position", "created_at")

RECORD_COLUMNS = ("decision_id", "request_id", "caller", "as_of", "account_id", "model_version", "run_id",
                  "policy_version", "features", "answer", "rules_evaluated", "propensity", "source",
                  "idempotency_key", "request_fingerprint", "tenant", "profile", "created_at")
# columns added after the first release: created on an older table by `_add_missing_columns`
ADDED_COLUMNS = {"request_fingerprint": "VARCHAR", "tenant": "VARCHAR", "profile": "VARCHAR",
                 "chain_partition": "VARCHAR", "chain_seq": "BIGINT", "prev_hash": "VARCHAR",
                 "record_hash": "VARCHAR"}
# the same for decision_events; an added column's values for older rows come from the decision they are about
ADDED_EVENT_COLUMNS = {"account_id": "VARCHAR"}
DEFAULT_TENANT = "default"  # the tenant of keys configured without one, and of records made before tenants

# What happened after a decision (CONTRACT.md "Feedback from the CRM"): appended beside it, never edited. The
# same (decision, kind, event_key) twice is one event: an outcome's key is its attempt (when and on which
# channel), an override's or contest's is the caller's Idempotency-Key or the body's digest.
EVENT_KINDS = ("outcome", "override", "contest")
decision_events = sa.Table(
    "decision_events",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("decision_id", sa.String(), nullable=False, index=True),
    sa.Column("account_id", sa.String(), nullable=True, index=True),  # the decision's: R-CONTESTED reads events only
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("event_key", sa.String(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=True),
    sa.Column("caller", sa.String(), nullable=False),
    sa.Column("body", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('outcome', 'override', 'contest')", name="ck_decision_events_kind"),
    sa.UniqueConstraint("decision_id", "kind", "event_key", name="uq_decision_events_key"),
)
EVENT_COLUMNS = ("event_id", "decision_id", "kind", "caller", "body", "created_at")


@dataclass
class DecisionRecord:
    """One decision as recorded for the audit: the inputs (features), the rules evaluated and the answer."""

    decision_id: str
    request_id: str
    caller: str
    as_of: str
    account_id: str
    model_version: str
    run_id: str | None
    policy_version: str
    features: dict[str, Any]
    answer: dict[str, Any]
    rules_evaluated: list[str]
    propensity: float | None
    source: str
    idempotency_key: str | None = None
    request_fingerprint: str | None = None  # with a key: the digest of the request, to refuse a reuse
    tenant: str = DEFAULT_TENANT  # whose CRM asked: a scoring key reads only its tenant's records
    profile: str = "jp"  # the rule profile of the policy that decided: its retention (RETENTION_YEARS)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @classmethod
    def from_answer(cls, answer: dict[str, Any], *, request_id: str, caller: str, run_id: str | None,
                    policy_version: str, features: dict[str, Any], rules_evaluated: list[str], source: str,
                    idempotency_key: str | None = None, request_fingerprint: str | None = None,
                    tenant: str = DEFAULT_TENANT, profile: str = "jp") -> DecisionRecord:
        """The record of a contract answer (models/answers.py): ids, as-of, version and propensity come from it."""
        return cls(decision_id=answer["decision_id"], request_id=request_id, caller=caller, as_of=answer["as_of"],
                   account_id=answer["account_id"], model_version=answer["model_version"], run_id=run_id,
                   policy_version=policy_version, features=features, answer=answer,
                   rules_evaluated=list(rules_evaluated), propensity=answer.get("propensity"), source=source,
                   idempotency_key=idempotency_key, request_fingerprint=request_fingerprint, tenant=tenant,
                   profile=profile)


_PLAIN = frozenset({str, int, bool, type(None)})  # JSON as they are


class _Safe(dict):
    """A mapping `_json_safe` made already: the record's hash and its JSON columns take it as it is, so a
    record's features and answer are walked once, not once for the hash and once per column."""


class _SafeList(list):
    """A list `_json_safe` made already (see `_Safe`)."""


_SCALAR_OR_MADE = _PLAIN | {float, _Safe, _SafeList}  # what `_walk` settles in its first lines, without a walk


def _row(record: DecisionRecord, created_at: datetime, position: int) -> dict[str, Any]:
    """A record as the row inserted: its JSON fields made safe once, its instant and its place in the request."""
    row = {c: getattr(record, c) for c in RECORD_COLUMNS}
    row.update(features=_made_safe(record.features), answer=_made_safe(record.answer),
               rules_evaluated=_made_safe(record.rules_evaluated), created_at=created_at,
               propensity=_finite_or_none(record.propensity), request_position=position)
    return row


def parsed_json(text: str | bytes) -> Any:
    """JSON text (the log's own, `json_text`) as the values a record holds, already JSON-safe (parsed JSON holds
    no NaN and no numpy value), so a record built from it is not walked again."""
    return _marked(orjson.loads(text))


def _made_safe(value: Any) -> Any:
    return _marked(_json_safe(value))


def _marked(safe: Any) -> Any:
    """JSON-safe values marked as made (`_Safe`, `_SafeList`), so the hash and the columns take them as they are."""
    return _Safe(safe) if type(safe) is dict else _SafeList(safe) if type(safe) is list else safe


def _json_safe(value: Any) -> Any:
    """JSON-ready values: numpy scalars and arrays as Python ones, NaN and infinities as null (PostgreSQL
    rejects them). Values already made (`_Safe`) and plain scalars take `_walk`'s first lines; anything else is
    written and read back by orjson in C (a record holds a hundred values or more: walking them in Python was
    most of the decision log's time), and whatever orjson would write differently from `_walk` (keys that are
    not text, dates, integers past 64 bits) takes `_walk` instead, so the result is `_walk`'s."""
    if type(value) in _SCALAR_OR_MADE:
        return _walk(value)
    try:
        return orjson.loads(orjson.dumps(value, default=_as_python, option=orjson.OPT_PASSTHROUGH_DATETIME))
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _walk(value)


def _as_python(value: Any) -> Any:
    """orjson's fallback for the types it does not write itself: numpy scalars and arrays as Python values."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _walk(value: Any) -> Any:
    """`_json_safe` in Python, value by value: the exact built-in types first, anything else the general path."""
    kind = type(value)
    if kind in _PLAIN or kind is _Safe or kind is _SafeList:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {k if type(k) is str else str(k): _walk(v) for k, v in value.items()}
    if kind is list:
        return [_walk(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalars and arrays
        return _walk(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: Any) -> str:
    """A value as JSON text the way the log stores it: `_json_safe`'s values, non-ASCII kept, never NaN
    (written by orjson, compact; what it would write differently from `_json_safe` takes the json module)."""
    try:
        return orjson.dumps(value, default=_as_python, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:
        return json.dumps(_walk(value), ensure_ascii=False, allow_nan=False)


def _normalise_url(url: str) -> sa.URL:
    """The URL with PostgreSQL pinned to psycopg 3; in-memory SQLite is refused (the records must persist)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("the decision log needs a SQLite file path or a PostgreSQL URL, not an in-memory database")
    return parsed


def _engine_options(url: sa.URL, pool_size: int, connect_timeout_s: float, statement_timeout_s: float,
                    sync: str = "full") -> dict:
    """Pool and driver options so a dead database fails within seconds and a commit is durable (`sync` full:
    on disk before the commit returns; normal: survives a crash of the process or server, may lose the last
    commits on a power loss)."""
    options: dict[str, Any] = {"pool_size": pool_size, "pool_timeout": statement_timeout_s,
                               "hide_parameters": True, "json_serializer": json_text}
    if url.get_backend_name() == "postgresql":
        statement_ms = int(statement_timeout_s * 1000)
        options["pool_pre_ping"] = True  # a server restarted between requests: reconnect, not fail (SQLite: a file)
        options["max_overflow"] = pool_size
        options["connect_args"] = {
            "connect_timeout": max(2, math.ceil(connect_timeout_s)),  # libpq's minimum is 2 s
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} "
                       f"-c synchronous_commit={'on' if sync == 'full' else 'off'}",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
        }
    elif url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": statement_timeout_s, "check_same_thread": False}
    return options


def _describe(err: BaseException) -> str:
    """The error's class and SQLSTATE only: driver messages can quote the failing row."""
    orig = getattr(err, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    name = type(orig).__name__ if orig is not None else type(err).__name__
    return f"{name} ({sqlstate})" if sqlstate else name


class DecisionLog:
    """The append-only decision log. Connects lazily on first use and creates the table if it is missing."""

    def __init__(self, url: str, *, pool_size: int = 5, connect_timeout_s: float = 2.0,
                 statement_timeout_s: float = 5.0, sync: str = "full"):
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        self.url = _normalise_url(url)
        self.backend = self.url.get_backend_name()
        self.sync = sync
        self._options = _engine_options(self.url, pool_size, connect_timeout_s, statement_timeout_s, sync)
        self.deadline_s = statement_timeout_s + 1.0  # the server's own timeout answers first when it can
        self._connections: weakref.WeakSet = weakref.WeakSet()  # PostgreSQL: the driver connections, to cut
        self._engine: Engine | None = None
        self._schema_ready = False
        self._file_id: tuple[int, int] | None = None  # SQLite: (device, inode) of the file the engine opened
        self._made_directory = False
        self._lock = threading.Lock()
        self._head_statement: sa.Insert | None = None  # _lock_head's, in this backend's dialect

    # -- connection ----------------------------------------------------------------------------------------
    def _ready_engine(self) -> Engine:
        """The engine, with the table created on first use (retried on the next call if that failed)."""
        with self._lock:  # held only to build the engine: a dead database must not queue callers behind a lock
            if self._engine is None:
                self._engine = sa.create_engine(self.url, **self._options)
                if self.backend == "sqlite":
                    sa.event.listen(self._engine, "connect", _sqlite_pragmas(self.sync))
                else:
                    sa.event.listen(self._engine, "connect", lambda dbapi, _: self._connections.add(dbapi))
            engine = self._engine
        if not self._schema_ready:
            self._create_schema(engine)  # concurrent callers may all try: create_all tolerates losing the race
            self._schema_ready = True
            if self.backend == "sqlite":
                self._file_id = _file_id(self.url.database)
        return engine

    def _create_schema(self, engine: Engine) -> None:
        """metadata.create_all, again while another process wins the race to create one of the tables or
        indexes between check and create (each try gets further). The SQLite file's directory is made on the
        first use only: one that vanishes later is a fault to report (503, not ready) until it is back, not a
        reason to start an empty log elsewhere."""
        if self.backend == "sqlite" and not self._made_directory:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self._made_directory = True
        for attempt in range(CREATE_TRIES):
            try:
                metadata.create_all(engine)
                self._add_missing_columns(engine)  # its check-then-create races the same way
                break
            except exc.DBAPIError as err:
                if not _lost_create_race(err) or attempt == CREATE_TRIES - 1:
                    raise

    def _add_missing_columns(self, engine: Engine) -> None:
        """The migrations so far: tables from an older release get the columns added since (nullable); an
        event's account is filled in from its decision, and its index made, so R-CONTESTED reads events only."""
        inspector = sa.inspect(engine)
        present = {column["name"] for column in inspector.get_columns("decisions")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE decisions ADD COLUMN {name} {kind}"))
        present = {column["name"] for column in inspector.get_columns("decision_events")}
        for name, kind in ADDED_EVENT_COLUMNS.items():
            if name not in present:
                with engine.begin() as conn:  # the column, its values and its index, or none of them
                    conn.execute(sa.text(f"ALTER TABLE decision_events ADD COLUMN {name} {kind}"))
                    conn.execute(decision_events.update().where(decision_events.c.account_id.is_(None))
                                 .values(account_id=_account_of(decision_events.c.decision_id)))
                    for index in decision_events.indexes:
                        if name in index.columns:
                            index.create(conn)

    @contextmanager
    def _connection(self, what: str, *, write: bool) -> Iterator[Connection]:
        """A connection (in a committed transaction when `write`), with database failures as DecisionLogUnavailable."""
        watchdog = None
        if self.backend == "postgresql":
            watchdog = threading.Timer(self.deadline_s, self._cut_connections, args=(what,))
            watchdog.daemon = True
            watchdog.start()
        try:
            engine = self._ready_engine()
            with (engine.begin() if write else engine.connect()) as conn:
                yield conn
            self._check_same_file()
        except exc.IntegrityError:
            raise
        except (exc.DBAPIError, exc.TimeoutError, OSError) as err:
            log.warning("decision log %s failed", what, extra={"error": _describe(err), "backend": self.backend})
            self._forget_sqlite_file()
            raise DecisionLogUnavailable(f"decision log {what} failed: {_describe(err)}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _cut_connections(self, what: str) -> None:
        """A call waited past its deadline: the server hangs. Shut every driver connection's socket down, so
        the calls blocked on them fail now (the pool reconnects later, within the connect timeout)."""
        log.warning("decision log %s past its deadline: cutting the connections", what,
                    extra={"backend": self.backend, "duration_ms": round(self.deadline_s * 1000)})
        for connection in list(self._connections):
            with suppress(Exception):  # closed meanwhile: nothing to cut
                cut = socket.socket(fileno=os.dup(connection.pgconn.socket))
                try:
                    cut.shutdown(socket.SHUT_RDWR)
                finally:
                    cut.close()

    def _check_same_file(self) -> None:
        """SQLite: raise FileNotFoundError unless the path still names the file the engine opened. An open
        file whose directory was removed (or that was replaced) still takes writes, which no reader will
        ever find; this runs after the commit, so such a write is answered 503."""
        if self.backend == "sqlite" and _file_id(self.url.database) != self._file_id:
            raise FileNotFoundError("the decision log's SQLite file is gone or was replaced")

    def _forget_sqlite_file(self) -> None:
        """SQLite, after a failure: close every connection, so the next use opens the path afresh (and creates
        the table in a new file); a log whose directory comes back then recovers by itself."""
        if self.backend != "sqlite":
            return
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine, self._schema_ready, self._file_id = None, False, None

    def _read(self, what: str, query: Callable[[Connection], T]) -> T:
        with self._connection(what, write=False) as conn:
            return query(conn)

    # -- writes --------------------------------------------------------------------------------------------
    def append(self, records: list[DecisionRecord]) -> None:
        """Write all records in one committed transaction, or none of them.

        Sets each record's `created_at` (UTC, one instant per call) once committed. Raises
        DecisionLogUnavailable when the database cannot be reached, DecisionRejected when it refuses a record,
        and IdempotencyConflict when another request under the same (caller, Idempotency-Key) won the race.
        """
        try:
            self.append_groups([records])
        except DecisionRejected:
            self._raise_conflict(records)
            raise

    def append_groups(self, groups: list[list[DecisionRecord]]) -> None:
        """Several callers' records in one committed transaction (one disk sync), or none of them; each
        group's records are numbered from 0 (`request_position`). Raises DecisionRejected on any refused
        record (the callers then retry alone to learn whose it was) and DecisionLogUnavailable."""
        created_at = datetime.now(UTC)
        rows = [_row(r, created_at, i) for records in groups for i, r in enumerate(records)]
        if not rows:
            return
        try:
            with self._connection("write", write=True) as conn:
                conn.execute(decisions.insert(), self._chained(conn, rows))
        except exc.IntegrityError as err:
            log.warning("decision log write rejected", extra={"error": _describe(err), "backend": self.backend})
            raise DecisionRejected(f"decision log write rejected: {_describe(err)}") from None
        for records in groups:
            for record in records:
                record.created_at = created_at

    def append_each(self, groups: list[list[DecisionRecord]]) -> list[BaseException | None]:
        """Several callers' records in one committed transaction (`append_groups`: one disk sync); when the
        database refuses a record, each caller's records alone, so each gets its own outcome (IdempotencyConflict,
        DecisionRejected). One outcome per caller, None when written; raises DecisionLogUnavailable for all of
        them. The API's grouped scorer (`models.scoring.GroupScorer`) writes each group of requests with it."""
        try:
            self.append_groups(groups)
            return [None] * len(groups)
        except DecisionRejected:
            outcomes: list[BaseException | None] = []
            for records in groups:
                try:
                    self.append(records)
                    outcomes.append(None)
                except BaseException as err:  # handed to the waiting caller, who raises it
                    outcomes.append(err)
            return outcomes

    def append_once(self, records: list[DecisionRecord], batch_size: int = 2000) -> int:
        """The batch's bulk append: at most one record per (caller, idempotency_key), however often it is called.

        The nightly batch keys each record by its run and account, so a run that is killed while recording and
        started again records every account of the run exactly once. Records go in committed batches; in each,
        keys already present are skipped and an insert that loses a race to a concurrent writer is ignored
        (ON CONFLICT DO NOTHING on the idempotency constraint). Returns how many records were new.
        """
        if any(r.idempotency_key is None for r in records):
            raise ValueError("append_once needs an idempotency_key on every record")
        new = 0
        for lo in range(0, len(records), batch_size):
            batch = records[lo:lo + batch_size]
            created_at = datetime.now(UTC)
            try:
                rows = self._insert_new(batch, created_at)
            except exc.IntegrityError as err:
                log.warning("decision log write rejected", extra={"error": _describe(err), "backend": self.backend})
                raise DecisionRejected(f"decision log write rejected: {_describe(err)}") from None
            new += len(rows)
        return new

    def _insert_new(self, batch: list[DecisionRecord], created_at: datetime) -> list[dict[str, Any]]:
        """In one transaction: the batch's records whose (caller, key) is not recorded yet, inserted."""
        with self._connection("write", write=True) as conn:
            for part in dict.fromkeys(_partition(vars(r)) for r in batch):
                self._lock_head(conn, part)  # before looking for keys: no writer can add one meanwhile
            keys = sa.select(decisions.c.caller, decisions.c.idempotency_key).where(
                decisions.c.idempotency_key.in_([r.idempotency_key for r in batch]), decisions.c.request_position == 0)
            seen = {tuple(row) for row in conn.execute(keys)}
            rows = [_row(r, created_at, 0) for r in batch if (r.caller, r.idempotency_key) not in seen]
            if rows:
                conn.execute(self._insert_ignoring_duplicates(), self._chained(conn, rows))
        return rows

    def _insert_ignoring_duplicates(self) -> sa.Insert:
        """INSERT ... ON CONFLICT (caller, idempotency_key, request_position) DO NOTHING, in this backend's dialect."""
        return self._dialect_insert(decisions).on_conflict_do_nothing(
            index_elements=["caller", "idempotency_key", "request_position"])

    def _dialect_insert(self, table: sa.Table):
        if self.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _lock_head(self, conn: Connection, part: str) -> tuple[int, str]:
        """The partition's (last_seq, last_hash), its head row created if new and locked to this transaction:
        one statement, an insert that on conflict rewrites the row unchanged (PostgreSQL locks it; SQLite's
        write lock is the database's) and returns it."""
        if self._head_statement is None:  # built once: a statement's construction costs more than its run
            self._head_statement = self._dialect_insert(chain_heads).values(
                chain_partition=sa.bindparam("part"), last_seq=0, last_hash=GENESIS, anchor_seq=0,
                anchor_hash=GENESIS,
            ).on_conflict_do_update(index_elements=["chain_partition"], set_={"last_seq": chain_heads.c.last_seq},
                                    ).returning(chain_heads.c.last_seq, chain_heads.c.last_hash)
        seq, last = conn.execute(self._head_statement, {"part": part}).one()
        return int(seq), last

    def _chained(self, conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with their chain fields, in order, each partition's head locked and moved past them (in the
        caller's transaction: the rows and the heads commit together or not at all)."""
        for part in dict.fromkeys(_partition(row) for row in rows):
            seq, prev = self._lock_head(conn, part)
            for row in (r for r in rows if _partition(r) == part):
                seq += 1
                row.update(chain_partition=part, chain_seq=seq, prev_hash=prev)
                row["record_hash"] = prev = record_hash(row)
            conn.execute(_MOVE_HEAD, {"part": part, "seq": seq, "hash": prev})
        return rows

    def _raise_conflict(self, records: list[DecisionRecord]) -> None:
        """After an integrity error: if a keyed request already holds answers, the caller lost a race. The
        stored answers are looked up with this request's fingerprint, so a race lost to a different request
        under the same key is IdempotencyMismatch (a 422), never the other request's answers."""
        keyed = {(r.caller, r.idempotency_key): r.request_fingerprint for r in records if r.idempotency_key}
        for (caller, key), fingerprint in keyed.items():
            answers = self.find_idempotent(caller, key, fingerprint)
            if answers is not None:
                raise IdempotencyConflict(caller, key, answers)

    # -- reads ---------------------------------------------------------------------------------------------
    def find_idempotent(self, caller: str, key: str, fingerprint: str | None = None) -> list[dict[str, Any]] | None:
        """The answers stored under (caller, Idempotency-Key), in request order, or None if there are none.
        Raises IdempotencyMismatch when `fingerprint` is given and the stored request had another one."""
        query = (sa.select(decisions.c.answer, decisions.c.request_fingerprint)
                 .where(decisions.c.caller == caller, decisions.c.idempotency_key == key)
                 .order_by(decisions.c.request_position))
        rows = self._read("idempotency lookup", lambda conn: conn.execute(query).all())
        if not rows:
            return None
        stored = rows[0][1]
        if fingerprint is not None and stored is not None and stored != fingerprint:
            raise IdempotencyMismatch(caller, key)
        return [answer for answer, _ in rows]

    def get(self, decision_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The latest record of `decision_id` with `times_recorded` and `first_recorded_at`, or None. With a
        `tenant`, only that tenant's records are seen (another tenant's decision is None, as if absent)."""
        where = [decisions.c.decision_id == decision_id]
        if tenant is not None:
            mine = decisions.c.tenant == tenant
            where.append(sa.or_(mine, decisions.c.tenant.is_(None)) if tenant == DEFAULT_TENANT else mine)
        latest = (sa.select(*(decisions.c[c] for c in RECORD_COLUMNS)).where(*where)
                  .order_by(decisions.c.record_id.desc()).limit(1))
        summary = sa.select(sa.func.count(), sa.func.min(decisions.c.created_at)).where(*where)

        def query(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(latest).mappings().first()
            if row is None:
                return None
            times, first = conn.execute(summary).one()
            return {**row, "times_recorded": times, "first_recorded_at": first}

        return self._read("read", query)

    # -- what happened after a decision ----------------------------------------------------------------------
    def add_event(self, decision_id: str, kind: str, event_key: str, body: dict[str, Any], caller: str,
                  tenant: str) -> tuple[dict[str, Any], bool]:
        """Append an outcome, override or contest beside its decision, committed before this returns; returns
        the event and True, or the event already stored under the same (decision, kind, key) and False (an
        outcome reported twice is counted once). The caller has checked that the decision exists."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, not {kind!r}")
        row = {"event_id": str(uuid.uuid4()), "decision_id": decision_id, "kind": kind, "event_key": event_key,
               "tenant": tenant, "caller": caller, "body": _json_safe(body), "created_at": datetime.now(UTC)}
        try:
            with self._connection("event write", write=True) as conn:
                conn.execute(sa.insert(decision_events).values(**row, account_id=_account_of(decision_id)))
            return _event(row), True
        except exc.IntegrityError:
            query = (sa.select(*(decision_events.c[c] for c in EVENT_COLUMNS))
                     .where(decision_events.c.decision_id == decision_id, decision_events.c.kind == kind,
                            decision_events.c.event_key == event_key))
            stored = self._read("event read", lambda conn: conn.execute(query).mappings().first())
            if stored is None:  # refused for another reason than the key
                raise DecisionRejected(f"the decision log refused the {kind} event") from None
            return _event(stored), False

    def events(self, decision_id: str) -> list[dict[str, Any]]:
        """Every outcome, override and contest recorded beside a decision, oldest first."""
        query = (sa.select(*(decision_events.c[c] for c in EVENT_COLUMNS))
                 .where(decision_events.c.decision_id == decision_id).order_by(decision_events.c.created_at))
        return [_event(row) for row in self._read("event read", lambda conn: conn.execute(query).mappings().all())]

    def contested(self, account_ids: Iterable[str] | None = None, tenant: str | None = None,
                  chunk: int = 1000) -> frozenset[str]:
        """The accounts (of these, or all) whose customer contested a decision after the last override a person
        recorded on any of the account's decisions: R-CONTESTED routes them to a person until one answers.
        With a `tenant`, only that tenant's events count."""
        e = decision_events  # each event carries its decision's account: the decisions table is not read
        base = (sa.select(e.c.account_id, e.c.kind, sa.func.max(e.c.created_at))
                .where(e.c.kind.in_(["contest", "override"]), e.c.account_id.is_not(None))
                .group_by(e.c.account_id, e.c.kind))
        if tenant is not None:
            mine = e.c.tenant == tenant
            base = base.where(sa.or_(mine, e.c.tenant.is_(None)) if tenant == DEFAULT_TENANT else mine)
        queries = [base] if account_ids is None else [base.where(e.c.account_id.in_(part))
                                                      for part in _chunks(account_ids, chunk)]
        latest: dict[str, dict[str, datetime]] = {}
        for query in queries:
            for account, kind, at in self._read("contest read", lambda conn, q=query: conn.execute(q).all()):
                latest.setdefault(account, {})[kind] = at
        return frozenset(a for a, at in latest.items()
                         if "contest" in at and at["contest"] > at.get("override", datetime.min.replace(tzinfo=UTC)))

    # -- what training reads (pipelines/feedback.py) ----------------------------------------------------------
    def decisions_named(self, decision_ids: Iterable[str], chunk: int = 1000) -> dict[str, dict[str, Any]]:
        """The latest record of each named decision that the log holds: {decision_id: {account_id, as_of,
        answer, propensity, tenant}}; ids it does not hold are absent."""
        columns = [decisions.c[c] for c in ("decision_id", "account_id", "as_of", "answer", "propensity", "tenant")]
        found: dict[str, dict[str, Any]] = {}
        for part in _chunks(decision_ids, chunk):
            query = sa.select(*columns).where(decisions.c.decision_id.in_(part)).order_by(decisions.c.record_id)
            for row in self._read("read", lambda conn, q=query: conn.execute(q).mappings().all()):
                found[row["decision_id"]] = dict(row)  # ordered by record: the latest record wins
        return found

    def all_events(self, kinds: Sequence[str] = EVENT_KINDS) -> list[dict[str, Any]]:
        """Every event of these kinds, oldest first, with its body (the feedback training joins)."""
        query = (sa.select(*(decision_events.c[c] for c in EVENT_COLUMNS))
                 .where(decision_events.c.kind.in_(list(kinds)))
                 .order_by(decision_events.c.created_at, decision_events.c.event_id))
        return [{**_event(row), "body": row["body"]} for row in
                self._read("event read", lambda conn: conn.execute(query).mappings().all())]

    def count(self, source: str | None = None) -> int:
        """How many records, all or from one source ("api" or "batch")."""
        query = sa.select(sa.func.count()).select_from(decisions)
        if source is not None:
            query = query.where(decisions.c.source == source)
        return self._read("count", lambda conn: conn.scalar(query))

    # -- tamper evidence and retention ----------------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Walk every partition's chain: each record's hash recomputed, its prev_hash and sequence following
        the one before (from the purge anchor), the last equal to the head. Returns {"ok", "partitions": {name:
        {"records", "problem"}}, "unchained"}; `problem` names the first break (sequence and what broke)."""
        def query(conn: Connection) -> dict[str, Any]:
            heads = {h.chain_partition: h for h in conn.execute(sa.select(chain_heads))}
            rows = conn.execution_options(yield_per=2000).execute(
                sa.select(decisions).where(decisions.c.chain_partition.is_not(None))
                .order_by(decisions.c.chain_partition, decisions.c.chain_seq)).mappings()
            walks = {part: _ChainWalk(head) for part, head in heads.items()}
            for row in rows:
                walk = walks.setdefault(row["chain_partition"], _ChainWalk(None))
                walk.step(row)
            unchained = conn.scalar(sa.select(sa.func.count()).select_from(decisions)
                                    .where(decisions.c.chain_partition.is_(None)))
            return {"partitions": {part: walk.result() for part, walk in sorted(walks.items())},
                    "unchained": unchained}

        report = self._read("verify", query)
        report["ok"] = all(p["problem"] is None for p in report["partitions"].values())
        return report

    def purge(self, now: datetime, retention_years: Mapping[str, int] = RETENTION_YEARS) -> list[dict[str, Any]]:
        """Delete, per partition, the records past their profile's retention (created before `now` minus its
        years), only as the chain's prefix: the first record still within retention and all after it stay.
        The last removed record's hash becomes the partition's anchor, so `verify` still checks what is kept.
        A profile without a retention is never purged. Returns what was removed, per partition."""
        removed = []
        for part in self._read("purge", lambda conn: conn.scalars(sa.select(chain_heads.c.chain_partition)).all()):
            years = retention_years.get(part.rsplit("/", 1)[-1])
            if years is not None:
                with self._connection("purge", write=True) as conn:
                    done = self._purge_partition(conn, part, _years_before(now, years))
                if done is not None:
                    removed.append(done)
        return removed

    def _purge_partition(self, conn: Connection, part: str, cutoff: datetime) -> dict[str, Any] | None:
        """In one transaction, the head locked: remove the expired prefix of `part`; what was removed, or None."""
        last_seq, _ = self._lock_head(conn, part)
        mine = decisions.c.chain_partition == part
        kept_from = conn.scalar(sa.select(sa.func.min(decisions.c.chain_seq))
                                .where(mine, decisions.c.created_at >= cutoff)) or last_seq + 1
        expired = sa.and_(mine, decisions.c.chain_seq < kept_from)
        count, oldest, newest = conn.execute(sa.select(sa.func.count(), sa.func.min(decisions.c.created_at),
                                                       sa.func.max(decisions.c.created_at)).where(expired)).one()
        if not count:
            return None
        anchor = conn.scalar(sa.select(decisions.c.record_hash).where(mine, decisions.c.chain_seq == kept_from - 1))
        conn.execute(decisions.delete().where(expired))
        conn.execute(chain_heads.update().where(chain_heads.c.chain_partition == part)
                     .values(anchor_seq=kept_from - 1, anchor_hash=anchor))
        return {"partition": part, "removed": count, "cutoff": cutoff, "oldest": oldest, "newest": newest}

    def ping(self) -> bool:
        """True when the database answers and the table exists (for /readyz); never raises."""
        try:
            return self._read("ping", lambda conn: conn.scalar(sa.select(1)) == 1)
        except DecisionLogUnavailable:
            return False

    def close(self) -> None:
        """Close pooled connections; the log reconnects if used again."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine, self._schema_ready = None, False


def _chunks(values: Iterable[str], size: int) -> Iterator[list[str]]:
    """The distinct values, sorted, in lists of at most `size` (an IN list a database takes)."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def _account_of(decision_id: Any) -> sa.ScalarSelect:
    """The account of a decision (every record of one decision id is about the same account), as a subquery."""
    return (sa.select(decisions.c.account_id).where(decisions.c.decision_id == decision_id).limit(1)
            .scalar_subquery())


def _event(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as answered and shown beside its decision."""
    return {"event_id": row["event_id"], "decision_id": row["decision_id"], "kind": row["kind"],
            "caller": row["caller"], "recorded_at": row["created_at"].isoformat(), **row["body"]}


class _ChainWalk:
    """One partition's chain, record by record: the first break is kept as the problem."""

    def __init__(self, head: Any):
        self.head, self.records, self.problem = head, 0, None if head is not None else "no chain head"
        self.seq = head.anchor_seq if head is not None else 0
        self.prev = head.anchor_hash if head is not None else GENESIS

    def step(self, row: Mapping[str, Any]) -> None:
        self.records += 1
        if self.problem is None:
            seq = int(row["chain_seq"])
            if seq != self.seq + 1:
                self.problem = f"record {self.seq + 1} is missing (next is {seq})"
            elif row["prev_hash"] != self.prev:
                self.problem = f"record {seq}: prev_hash is not the hash of record {self.seq}"
            elif record_hash(row) != row["record_hash"]:
                self.problem = f"record {seq}: altered (its hash does not match its fields)"
        self.seq, self.prev = int(row["chain_seq"]), row["record_hash"]

    def result(self) -> dict[str, Any]:
        if self.problem is None and self.head is not None and self.seq != self.head.last_seq:
            self.problem = f"records {self.seq + 1}..{self.head.last_seq} are missing at the end"
        return {"records": self.records, "problem": self.problem}


def _years_before(now: datetime, years: int) -> datetime:
    """`now` moved back by whole calendar years (29 February to 28 February)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def _partition(row: Mapping[str, Any]) -> str:
    """The chain a record belongs to: its tenant and rule profile (a purge by profile cuts only chain prefixes)."""
    return f"{row.get('tenant') or DEFAULT_TENANT}/{row.get('profile') or 'jp'}"


def record_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of a record's fields (HASHED_COLUMNS, as JSON with sorted keys), partition, sequence and
    prev_hash: what was written is what `verify` recomputes from what it reads back."""
    fields = {c: _json_safe(row.get(c)) for c in HASHED_COLUMNS}  # field by field: a made one is taken as is
    fields["created_at"] = row["created_at"].astimezone(UTC).isoformat()
    fields["propensity"] = _finite_or_none(row.get("propensity"))
    chained = [row["chain_partition"], int(row["chain_seq"]), row["prev_hash"], fields]
    text = json.dumps(chained, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lost_create_race(err: exc.DBAPIError) -> bool:
    """Whether CREATE TABLE failed because another process created the table first (not a dead database)."""
    if isinstance(err, exc.IntegrityError | exc.ProgrammingError):  # PostgreSQL: duplicate table / pg_type row
        return True
    text = str(err.orig)  # SQLite reports it as an OperationalError
    return "already exists" in text or "duplicate column" in text


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _sqlite_pragmas(sync: str) -> Callable[[Any, Any], None]:
    """The connect hook: a rollback journal (DELETE), not WAL. WAL maps its `-shm` file into memory, and a
    `-shm` truncated or unwritable under the server killed the process with SIGBUS (no 503, no log line);
    a rollback journal maps nothing, and a directory that is gone fails the journal's creation, a clean
    error. It costs about 17 ms per commit against 4 ms (synchronous=FULL, this machine), shared by the
    requests of a group commit. synchronous=FULL puts every commit on disk before it returns; NORMAL
    skips some syncs (a crash of the process loses nothing, a power loss may lose the last commits)."""
    def hook(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=DELETE")
        cursor.execute(f"PRAGMA synchronous={sync.upper()}")
        cursor.close()
    return hook

