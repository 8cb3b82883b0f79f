"""The decision log against a SQLite file and a real PostgreSQL server (tests/postgres.py): records round-trip,
appends are atomic, an Idempotency-Key writes one set of records even under a race, and a dead database fails
fast with DecisionLogUnavailable and recovers when it comes back."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC

import pytest
import sqlalchemy as sa

from models.decision_log import (
    DecisionLog,
    DecisionLogUnavailable,
    DecisionRecord,
    DecisionRejected,
    IdempotencyConflict,
    IdempotencyMismatch,
)
from models.grouping import Combiner
from tests.postgres import PostgresServer, free_port, throwaway_postgres

FAST_S = 5.0  # a dead database must be reported well within this


@dataclass
class Backend:
    name: str
    url: str
    server: PostgresServer | None = None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    """A SQLite file in tmp_path, or this worker's PostgreSQL database with the table dropped."""
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'decisions.db'}")
    server = request.getfixturevalue("postgres")
    drop_table(server.url)
    return Backend("postgresql", server.url, server)


def drop_table(url: str) -> None:
    """An empty slate on the shared per-worker server (the log recreates the table on first use)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS decisions"))
        conn.execute(sa.text("DROP TABLE IF EXISTS chain_heads"))
    engine.dispose()


@pytest.fixture
def log(backend) -> Iterator[DecisionLog]:
    decision_log = DecisionLog(backend.url)
    yield decision_log
    decision_log.close()


def answer(account_id: str, decision_id: str, marker: str = "v1") -> dict:
    """An answer in the contract's shape (models/answers.py); `marker` tells answers apart."""
    return {
        "account_id": account_id, "as_of": "2026-11-01T09:00:00+09:00", "model_version": "7",
        "cure_probability": 0.42, "priority": 1234.5, "tier": "call",
        "action": {"channel": "phone", "contact_window": {"start": "2026-11-01T10:00:00+09:00",
                                                          "end": "2026-11-01T12:00:00+09:00"},
                   "offer": "instalment_plan", "template": None, "expected_gain": 0.031},
        "reasons": [f"overdue 35 days ({marker})", "promise broken"], "blocked": [{"rule": "R-CONSENT",
                                                                                  "action": "sms"}],
        "decision_id": decision_id, "propensity": 0.25,
    }


def record(n: int = 0, *, decision_id: str | None = None, caller: str = "crm", key: str | None = None,
           source: str = "api", marker: str = "v1", request_id: str = "req-1", **overrides) -> DecisionRecord:
    account_id = f"A{n:04d}"
    decision_id = decision_id or f"dec-{n}"
    fields = dict(
        decision_id=decision_id, request_id=request_id, caller=caller, as_of="2026-11-01T09:00:00+09:00",
        account_id=account_id, model_version="7", run_id="run-abc", policy_version="jp-2026.1",
        features={"days_past_due": 35, "ratio_paid": 0.5, "region": "東京", "missing": None, "flag": True},
        answer=answer(account_id, decision_id, marker), rules_evaluated=["R-CEASE", "R-HOURS", "R-CONSENT"],
        propensity=0.25, source=source, idempotency_key=key)
    fields.update(overrides)
    return DecisionRecord(**fields)


def decide(log: DecisionLog, caller: str, key: str, records: list[DecisionRecord]) -> list[dict]:
    """What the API does with an Idempotency-Key: replay the stored answers, else record these (or the winner's)."""
    stored = log.find_idempotent(caller, key)
    if stored is not None:
        return stored
    try:
        log.append(records)
    except IdempotencyConflict as conflict:
        return conflict.answers
    return [r.answer for r in records]


def test_append_then_get_round_trips_every_field_with_utc_created_at(log):
    rec = record(1)
    log.append([rec])
    stored = log.get("dec-1")
    assert stored is not None
    for field in ("decision_id", "request_id", "caller", "as_of", "account_id", "model_version", "run_id",
                  "policy_version", "features", "answer", "rules_evaluated", "propensity", "source",
                  "idempotency_key"):
        assert stored[field] == getattr(rec, field), field
    assert stored["features"]["region"] == "東京" and stored["features"]["missing"] is None
    assert stored["answer"]["action"]["contact_window"]["start"] == "2026-11-01T10:00:00+09:00"
    assert stored["created_at"].tzinfo is not None and stored["created_at"].utcoffset().total_seconds() == 0
    assert stored["created_at"] == rec.created_at and rec.created_at.tzinfo is UTC
    assert stored["times_recorded"] == 1


def test_get_unknown_decision_is_none(log):
    log.append([record(1)])
    assert log.get("no-such-decision") is None


def test_non_finite_and_numpy_values_are_stored_as_json(log):
    np = pytest.importorskip("numpy")
    rec = record(1, features={"ratio": float("nan"), "big": float("inf"), "n": np.int64(3), "x": np.float32(0.5)},
                 propensity=float("nan"))
    log.append([rec])
    stored = log.get("dec-1")
    assert stored["features"] == {"ratio": None, "big": None, "n": 3, "x": 0.5}
    assert stored["propensity"] is None


def test_json_safe_in_c_gives_what_the_python_walk_gives_and_the_same_text():
    """orjson makes the values JSON-safe; where it would write anything differently (keys that are not text, dates,
    integers past 64 bits) the Python walk does it, so stored values and the hash never depend on which ran."""
    import json
    import math
    from datetime import date, datetime

    import numpy as np

    from models.decision_log import _json_safe, _walk, json_text

    values = [
        {"ratio": float("nan"), "n": np.int64(3), "x": np.float32(0.1), "v": np.array([1.5, np.nan]), "s": "é",
         "t": (1, np.bool_(True)), "z": -0.0, "small": 1.2e-05, "nested": [{"a": float("inf")}, None]},
        {2: "int key", None: "none key", True: "bool key", 1.5: "float key"}, {"big": 2**70}, {"day": date(2026, 1, 2)},
        [np.datetime64("2026-01-01")], {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}, 7, "text", 1.5,
        float("nan"), np.float64(2.5),
    ]
    for value in values:
        fast, walked = _json_safe(value), _walk(value)
        assert fast == walked or (isinstance(walked, float) and math.isnan(walked)), value
        assert json.dumps(fast, sort_keys=True, default=str) == json.dumps(walked, sort_keys=True, default=str)
        try:
            expected = json.loads(json.dumps(walked, ensure_ascii=False, allow_nan=False))
        except TypeError:  # not JSON at all (a date): json_text refuses it as the json module does
            with pytest.raises(TypeError):
                json_text(value)
        else:
            assert json.loads(json_text(value)) == expected


def test_append_writes_none_of_the_records_when_the_database_rejects_one(log):
    records = [record(1), record(2, account_id=None), record(3)]  # account_id is NOT NULL
    with pytest.raises(DecisionRejected) as raised:
        log.append(records)
    assert isinstance(raised.value, DecisionLogUnavailable)  # callers answer 503 for both
    assert log.count() == 0
    assert log.get("dec-1") is None
    assert all(r.created_at is None for r in records)


def test_many_records_in_one_append_are_all_written_in_order(log):
    log.append([record(n, key="k-batch") for n in range(50)])
    assert log.count() == 50
    assert [a["account_id"] for a in log.find_idempotent("crm", "k-batch")] == [f"A{n:04d}" for n in range(50)]


def test_replay_with_the_same_key_returns_the_stored_answers_and_writes_nothing(log):
    first = decide(log, "crm", "key-1", [record(1, key="key-1"), record(2, key="key-1")])
    replay = decide(log, "crm", "key-1", [record(1, key="key-1", marker="v2", request_id="req-2"),
                                          record(2, key="key-1", marker="v2", request_id="req-2")])
    assert replay == first
    assert replay[0]["reasons"][0].endswith("(v1)")
    assert log.count() == 2


def test_appending_under_a_used_key_raises_conflict_with_the_stored_answers(log):
    log.append([record(1, key="key-1")])
    with pytest.raises(IdempotencyConflict) as raised:
        log.append([record(1, key="key-1", marker="v2")])
    assert raised.value.answers == [answer("A0001", "dec-1", "v1")]
    assert log.count() == 1


def test_the_same_key_from_another_caller_is_another_request(log):
    decide(log, "crm", "key-1", [record(1, key="key-1")])
    other = decide(log, "collections-app", "key-1", [record(1, caller="collections-app", key="key-1", marker="v2")])
    assert other[0]["reasons"][0].endswith("(v2)")
    assert log.count() == 2


def test_records_without_a_key_never_collide(log):
    log.append([record(1), record(2)])
    log.append([record(1), record(2)])
    assert log.count() == 4
    assert log.find_idempotent("crm", "anything") is None


def test_two_threads_racing_the_same_key_write_one_set_of_records(log):
    log.ping()  # create the table first so the race is on the insert, not on CREATE TABLE
    threads, barrier = 6, threading.Barrier(6)
    results: list[list[dict] | str] = [None] * threads

    def race(i: int) -> None:
        records = [record(1, key="race", marker=f"t{i}"), record(2, key="race", marker=f"t{i}")]
        barrier.wait()
        try:
            log.append(records)  # straight to the insert: every thread passed the find_idempotent check
            results[i] = [r.answer for r in records]
        except IdempotencyConflict as conflict:
            results[i] = conflict.answers
        except Exception as err:  # reported by the assertion below
            results[i] = repr(err)

    workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert log.count() == 2
    stored = log.find_idempotent("crm", "race")
    assert all(r == stored for r in results), results
    assert len({a["reasons"][0] for a in stored}) == 1  # both stored answers come from the same request


def test_same_decision_id_recorded_twice_get_returns_the_latest_with_the_count(log):
    log.append([record(1, request_id="req-1", marker="v1")])
    log.append([record(1, request_id="req-2", marker="v2")])
    stored = log.get("dec-1")
    assert stored["request_id"] == "req-2"
    assert stored["answer"]["reasons"][0].endswith("(v2)")
    assert stored["times_recorded"] == 2
    assert stored["first_recorded_at"] <= stored["created_at"]


def test_count_by_source(log):
    log.append([record(1), record(2), record(3, source="batch")])
    assert (log.count(), log.count("api"), log.count("batch")) == (3, 2, 1)


def test_ping_is_true_when_the_database_answers(log):
    assert log.ping() is True


def test_failures_log_and_raise_no_record_contents(log, caplog):
    secret = "ACCOUNT-SECRET-9931"  # fixture, not a secret
    with caplog.at_level(logging.DEBUG, logger="cureflow.decisions"), pytest.raises(DecisionRejected) as raised:
        log.append([record(1, account_id=secret, features={"x": secret}), record(2, model_version=None)])
    assert caplog.records, "the failure is logged"
    assert secret not in caplog.text
    assert all(secret not in str(vars(r)) for r in caplog.records)
    assert secret not in str(raised.value) and raised.value.__cause__ is None


def test_record_rejects_an_unknown_source():
    with pytest.raises(ValueError, match="source"):
        record(1, source="crm")


def test_record_from_answer_takes_ids_as_of_version_and_propensity_from_the_answer():
    rec = DecisionRecord.from_answer(answer("A0007", "dec-7"), request_id="req-9", caller="crm", run_id="run-abc",
                                     policy_version="jp-2026.1", features={"days_past_due": 35},
                                     rules_evaluated=["R-CEASE"], source="batch", idempotency_key="k")
    assert (rec.decision_id, rec.account_id, rec.as_of, rec.model_version, rec.propensity) == (
        "dec-7", "A0007", "2026-11-01T09:00:00+09:00", "7", 0.25)
    assert (rec.request_id, rec.caller, rec.source, rec.idempotency_key, rec.created_at) == (
        "req-9", "crm", "batch", "k", None)


def test_in_memory_sqlite_is_refused():
    with pytest.raises(ValueError, match="in-memory"):
        DecisionLog("sqlite://")


def test_sqlite_unwritable_path_is_unavailable_fast_then_recovers(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log's directory should be")
    log = DecisionLog(f"sqlite:///{blocker / 'decisions.db'}")
    started = time.perf_counter()
    with pytest.raises(DecisionLogUnavailable):
        log.append([record(1)])
    assert time.perf_counter() - started < FAST_S
    assert log.ping() is False
    with pytest.raises(DecisionLogUnavailable):
        log.get("dec-1")
    blocker.unlink()
    log.append([record(1)])
    assert log.ping() is True and log.count() == 1
    log.close()


def test_postgres_on_a_closed_port_is_unavailable_fast():
    log = DecisionLog(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing")  # no connection yet
    started = time.perf_counter()
    with pytest.raises(DecisionLogUnavailable):
        log.append([record(1)])
    with pytest.raises(DecisionLogUnavailable):
        log.find_idempotent("crm", "key-1")
    assert log.ping() is False
    assert time.perf_counter() - started < FAST_S
    log.close()


def test_postgres_stopped_mid_use_is_unavailable_fast_then_recovers_on_restart(postgres):
    if not postgres.controllable:
        pytest.skip("CUREFLOW_TEST_POSTGRES_URL points at a server these tests must not stop")
    drop_table(postgres.url)
    log = DecisionLog(postgres.url)
    log.append([record(1)])
    postgres.stop()
    try:
        started = time.perf_counter()
        with pytest.raises(DecisionLogUnavailable):
            log.append([record(2)])
        assert log.ping() is False
        assert time.perf_counter() - started < FAST_S
    finally:
        postgres.start()
    log.append([record(3)])
    assert log.ping() is True
    assert log.get("dec-2") is None and log.get("dec-3") is not None and log.count() == 2
    log.close()


def test_postgres_that_hangs_mid_use_fails_every_caller_within_the_deadline_then_recovers(postgres, caplog):
    """SIGSTOP on every server process: the port accepts, nothing answers, its statement_timeout never fires
    (before, each call waited for as long as the server hung). Writers and a readiness ping each fail within
    the deadline (statement timeout + 1 s) plus a connect timeout; once the server runs again, so does the log."""
    if not postgres.controllable:
        pytest.skip("CUREFLOW_TEST_POSTGRES_URL points at a server these tests must not stop")
    drop_table(postgres.url)
    log = DecisionLog(postgres.url, statement_timeout_s=1.0)
    log.append([record(1)])  # pooled connections to the server that is about to hang
    outcomes: list[object] = []

    def call(n: int) -> None:
        try:
            outcomes.append(log.ping() if n == 0 else log.append([record(n)]))
        except BaseException as err:  # reported by the assertion below
            outcomes.append(err)

    postgres.freeze()
    try:
        started = time.perf_counter()
        callers = [threading.Thread(target=call, args=(n,), daemon=True) for n in range(4)]
        for c in callers:
            c.start()
        for c in callers:
            c.join(timeout=30)
        elapsed = time.perf_counter() - started
    finally:
        postgres.thaw()
    assert len(outcomes) == 4 and elapsed < log.deadline_s + 2.0 + FAST_S, (elapsed, outcomes)
    assert sum(isinstance(o, DecisionLogUnavailable) for o in outcomes) == 3 and False in outcomes
    assert any(getattr(r, "backend", None) == "postgresql" and getattr(r, "error", None) for r in caplog.records)
    log.append([record(9)])
    assert log.ping() is True and log.get("dec-9") is not None
    log.close()


def test_postgres_restart_between_requests_costs_no_failed_write(postgres):
    if not postgres.controllable:
        pytest.skip("CUREFLOW_TEST_POSTGRES_URL points at a server these tests must not stop")
    drop_table(postgres.url)
    log = DecisionLog(postgres.url)
    log.append([record(1)])  # leaves a pooled connection that the restart kills
    postgres.stop()
    postgres.start()
    log.append([record(2)])  # the stale connection is replaced before use (pool_pre_ping)
    assert log.count() == 2
    log.close()


def test_postgres_that_accepts_but_never_answers_fails_every_caller_within_the_connect_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes the handshake; nobody ever speaks the protocol
        log = DecisionLog(f"postgresql+psycopg://nobody@127.0.0.1:{hung.getsockname()[1]}/nothing",
                          connect_timeout_s=2.0)
        outcomes: list[BaseException | None] = []

        def write(n: int) -> None:
            try:
                log.append([record(n)])
                outcomes.append(None)
            except BaseException as err:  # reported by the assertion below
                outcomes.append(err)

        started = time.perf_counter()
        writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(4)]  # concurrent requests
        for w in writers:
            w.start()
        for w in writers:
            w.join(timeout=15)
        elapsed = time.perf_counter() - started
    assert len(outcomes) == 4 and all(isinstance(o, DecisionLogUnavailable) for o in outcomes), outcomes
    assert elapsed < FAST_S, f"callers waited {elapsed:.1f}s: queued behind each other or no connect timeout"
    log.close()


def test_processes_starting_together_on_an_empty_database_all_become_ready(backend):
    logs = [DecisionLog(backend.url) for _ in range(8)]  # as `serve --workers 8` would, each with its own engine
    barrier = threading.Barrier(len(logs))
    ready: list[bool] = [False] * len(logs)

    def start(i: int) -> None:
        barrier.wait()
        ready[i] = logs[i].ping()

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(logs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(ready), ready
    for decision_log in logs:
        decision_log.close()


def test_group_commit_records_every_concurrent_caller_before_it_returns(log):
    writer, seen, errors = Combiner(log.append_each), {}, []

    def call(n: int) -> None:
        try:
            writer.submit([record(n)])
            seen[n] = log.get(f"dec-{n}") is not None  # readable as soon as append returns
        except Exception as err:  # pragma: no cover - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(seen.values()) and len(seen) == 24 and log.count("api") == 24


def test_group_commit_gives_one_winner_per_idempotency_key_and_the_others_its_answers(log):
    writer, outcomes = Combiner(log.append_each), []
    barrier = threading.Barrier(8)

    def call(n: int) -> None:
        barrier.wait()
        try:
            writer.submit([record(n, key="k-1", marker=f"m{n}")])
            outcomes.append(("won", n))
        except IdempotencyConflict as conflict:
            outcomes.append(("lost", conflict.answers[0]["reasons"][0]))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for what, n in outcomes if what == "won"]
    assert len(winners) == 1 and log.count() == 1
    assert {text for what, text in outcomes if what == "lost"} == {f"overdue 35 days (m{winners[0]})"}


def test_a_reused_key_with_another_request_is_refused(log):
    log.append([record(1, key="k-9", request_fingerprint="aaa")])
    assert log.find_idempotent("crm", "k-9", "aaa")[0]["decision_id"] == "dec-1"
    with pytest.raises(IdempotencyMismatch):
        log.find_idempotent("crm", "k-9", "bbb")


def test_a_table_from_the_first_release_gains_the_fingerprint_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the first release's table: no request_fingerprint
        conn.execute(sa.text("CREATE TABLE decisions (record_id INTEGER PRIMARY KEY, decision_id VARCHAR NOT NULL, "
                             "request_id VARCHAR NOT NULL, caller VARCHAR NOT NULL, source VARCHAR NOT NULL, "
                             "as_of VARCHAR NOT NULL, account_id VARCHAR NOT NULL, model_version VARCHAR NOT NULL, "
                             "run_id VARCHAR, policy_version VARCHAR NOT NULL, features JSON NOT NULL, "
                             "answer JSON NOT NULL, rules_evaluated JSON NOT NULL, propensity FLOAT, "
                             "idempotency_key VARCHAR, request_position INTEGER NOT NULL, "
                             "created_at DATETIME NOT NULL)"))
    engine.dispose()
    log = DecisionLog(url)
    log.append([record(3, key="k", request_fingerprint="f")])
    assert log.get("dec-3")["request_fingerprint"] == "f"
    log.close()


def test_contested_names_the_accounts_whose_last_contest_came_after_the_last_override(log):
    log.append([record(1), record(2), record(3), record(1, decision_id="dec-1b")])
    log.add_event("dec-1", "contest", "c1", {"note": ""}, "crm", "default")
    log.add_event("dec-2", "contest", "c2", {"note": ""}, "crm", "default")
    log.add_event("dec-2", "override", "o2", {"reason": "answered"}, "crm", "default")
    log.add_event("dec-3", "outcome", "t3", {"outcome": "paid"}, "crm", "default")
    assert log.contested() == {"A0001"}
    assert log.contested(["A0001", "A0002", "A0003", "A9999"]) == {"A0001"}
    assert log.contested(["A0002"]) == frozenset()
    # an override of another decision of the same account answers the contest
    log.add_event("dec-1b", "override", "o1", {"reason": "answered"}, "crm", "default")
    assert log.contested() == frozenset()
    assert log.contested(["A0001"], tenant="other") == frozenset()


def test_contested_reads_the_events_alone_however_many_decisions_the_account_has(log):
    log.append([record(1, decision_id=f"dec-{i}") for i in range(50)])
    log.add_event("dec-7", "contest", "c", {"note": ""}, "crm", "default")
    statements: list[str] = []

    def seen(_conn, _cursor, text, *_):
        statements.append(text)

    engine = log._ready_engine()
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        assert log.contested(["A0001"]) == {"A0001"}
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1 and "decision_events" in statements[0]
    assert "decisions" not in statements[0].replace("decision_events", "")  # the decisions table is not read


def test_events_of_an_older_release_gain_their_account_and_still_route_a_contest(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    log = DecisionLog(url)
    log.append([record(4), record(5)])
    log.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the release before: events without the account
        conn.execute(sa.text("DROP INDEX ix_decision_events_account_id"))
        conn.execute(sa.text("ALTER TABLE decision_events DROP COLUMN account_id"))
        conn.execute(sa.text("INSERT INTO decision_events (event_id, decision_id, kind, event_key, tenant, caller, "
                             "body, created_at) VALUES ('e1', 'dec-4', 'contest', 'k', 'default', 'crm', '{}', "
                             "'2026-11-01 00:00:00.000000')"))
    engine.dispose()
    log = DecisionLog(url)
    assert log.contested() == {"A0004"}
    log.add_event("dec-5", "contest", "k", {"note": ""}, "crm", "default")
    assert log.contested(["A0004", "A0005"]) == {"A0004", "A0005"}
    indexes = log._read("indexes", lambda conn: sa.inspect(conn).get_indexes("decision_events"))
    assert "ix_decision_events_account_id" in {index["name"] for index in indexes}
    log.close()


@pytest.mark.parametrize("sync, pragma", [("full", 2), ("normal", 1)])
def test_sqlite_sync_setting_reaches_every_connection(tmp_path, sync, pragma):
    log = DecisionLog(f"sqlite:///{tmp_path / 'd.db'}", sync=sync)
    assert log._read("pragma", lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar()) == pragma
    log.close()


# --- tamper evidence and retention -------------------------------------------------------------------------

def _tamper(url: str, statement: str) -> None:
    """Change the table behind the log's back, as someone with database access could."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def _chained_log(log: DecisionLog) -> None:
    """Records by all three write paths, two tenants and both profiles."""
    log.append([record(1), record(2, tenant="bank-b")])
    assert log.append_each([[record(3, profile="us")]]) == [None]
    log.append_once([record(4, key="run/A4", source="batch"), record(5, key="run/A5", source="batch")])


def test_every_record_is_chained_and_verify_finds_the_chain_intact(log):
    _chained_log(log)
    report = log.verify()
    assert report["ok"] and report["unchained"] == 0
    assert {p: r["records"] for p, r in report["partitions"].items()} == {
        "default/jp": 3, "bank-b/jp": 1, "default/us": 1}


@pytest.mark.parametrize(("statement", "says"), [
    ("UPDATE decisions SET account_id = 'A9999' WHERE decision_id = 'dec-4'", "record 2: altered"),
    ("UPDATE decisions SET features = '{\"days_past_due\": 1}' WHERE decision_id = 'dec-1'", "record 1: altered"),
    ("DELETE FROM decisions WHERE decision_id = 'dec-4'", "record 2 is missing"),
    ("DELETE FROM decisions WHERE decision_id = 'dec-5'", "records 3..3 are missing at the end"),
    ("UPDATE decisions SET prev_hash = record_hash WHERE decision_id = 'dec-5'", "record 3: prev_hash"),
])
def test_verify_names_the_first_break_of_an_edited_or_removed_record(log, backend, statement, says):
    _chained_log(log)
    _tamper(backend.url, statement)
    report = log.verify()
    assert not report["ok"] and says in report["partitions"]["default/jp"]["problem"], report
    assert report["partitions"]["default/us"]["problem"] is None


def test_purge_removes_only_records_past_their_profiles_retention_and_the_rest_still_verifies(log):
    from datetime import datetime, timedelta

    _chained_log(log)
    soon = datetime.now(UTC) + timedelta(days=365 * 3 + 2)  # past us's 3 years, within jp's 10
    assert log.purge(datetime.now(UTC)) == []
    removed = log.purge(soon)
    assert [(r["partition"], r["removed"]) for r in removed] == [("default/us", 1)]
    assert log.count() == 4 and log.get("dec-3") is None and log.get("dec-1") is not None
    log.append([record(6, profile="us")])  # the chain goes on after the purge
    assert log.verify()["ok"]
    later = datetime.now(UTC) + timedelta(days=365 * 10 + 5)
    assert sorted(r["partition"] for r in log.purge(later)) == ["bank-b/jp", "default/jp", "default/us"]
    assert log.count() == 0 and log.verify()["ok"]


def test_audit_commands_verify_the_chain_and_say_what_a_purge_removed(log, backend):
    from typer.testing import CliRunner

    from pipelines.cli import app

    _chained_log(log)
    runner = CliRunner()
    intact = runner.invoke(app, ["audit", "verify", "--decision-log", backend.url])
    assert intact.exit_code == 0 and "default/jp: 3 records, chain intact" in intact.output
    purged = runner.invoke(app, ["audit", "purge", "--decision-log", backend.url, "--now", "2031-01-01T00:00:00Z"])
    assert purged.exit_code == 0 and "default/us: removed 1 records" in purged.output
    assert "removed 1 records in all" in purged.output
    _tamper(backend.url, "UPDATE decisions SET answer = '{}' WHERE decision_id = 'dec-1'")
    broken = runner.invoke(app, ["audit", "verify", "--decision-log", backend.url])
    assert broken.exit_code == 1 and "default/jp: 3 records, record 1: altered" in broken.output


def test_writers_in_several_processes_chain_one_after_the_other(backend):
    """Four logs (as four worker processes would hold) appending at once into one partition: one chain, no
    fork (the head row is locked by each append)."""
    DecisionLog(backend.url).ping()
    logs = [DecisionLog(backend.url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for n in range(10):
                logs[w].append([record(100 * w + n)])
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    report = logs[0].verify()
    for each in logs:
        each.close()
    assert errors == [] and report["ok"], (errors, report)
    assert report["partitions"]["default/jp"]["records"] == 40
