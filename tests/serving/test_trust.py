"""Trust boundaries against a real server process: no answer for the wrong account under a racing
Idempotency-Key, no decision without a readable record when the SQLite log breaks, and clean 422s for
text Python cannot encode."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.contract import read_dir
from models.decision_log import DecisionLog
from tests.postgres import PostgresServer, throwaway_postgres
from tests.serving.test_api import HEADERS, KEY, _free_port, _requests_for, _wait_ready

pytestmark = pytest.mark.slow
AS_OF = "2026-11-01T00:00:00+09:00"
RACE_PAIRS = int(os.environ.get("CUREFLOW_RACE_PAIRS", "60"))  # the README's figure: 1000


def _start(args: list[str], env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`cureflow serve` as a real process logging to `log_path` (a file: a pipe nobody reads fills and stalls
    the server)."""
    port = _free_port()
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", *args, "--port", str(port)],
                                env={**os.environ, "CUREFLOW_API_KEYS": KEY, **env},
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen, log_path: Path) -> str:
    """Stop the server; its whole log."""
    proc.terminate()
    proc.wait(timeout=30)
    return log_path.read_text()


async def race_pairs(base: str, bodies: list[dict], pairs: int, wave: int = 8, prefix: str = "race"
                     ) -> dict[str, int]:
    """`pairs` Idempotency-Keys, each sent at once with two different accounts' requests (`wave` keys at a
    time); counts the answers by what they were: right account, wrong account, refused (422) or other."""
    counts = {"right": 0, "wrong": 0, "refused": 0, "other": 0}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=2 * wave)) as client:
        async def one(key: str, body: dict) -> None:
            r = await client.post(f"{base}/v1/score", json=body, headers={**HEADERS, "Idempotency-Key": key})
            if r.status_code == 200:
                right = r.json()["account_id"] == body["account"]["account_id"]
                counts["right" if right else "wrong"] += 1
            else:
                counts["refused" if r.status_code == 422 else "other"] += 1

        for lo in range(0, pairs, wave):
            await asyncio.gather(*(one(f"{prefix}-{i}", body) for i in range(lo, min(lo + wave, pairs))
                                   for body in bodies))
    return counts


def test_a_racing_idempotency_key_never_answers_with_another_accounts_decision(trained, tmp_path):
    """The same key sent at once with two accounts' requests: one wins, the other gets neither its own answer
    nor the winner's but a 422 (the key was used for another request). Before, 17 of 60 losers got the
    winner's answer: the conflict path looked the stored answers up without the request's fingerprint."""
    ids = read_dir(trained["data"]).accounts["account_id"].head(2).tolist()
    bodies = _requests_for(trained["data"], ids, AS_OF)
    server_log = tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])],
                        {"CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}, server_log)
    try:
        _wait_ready(base, proc)
        counts = asyncio.run(race_pairs(base, bodies, pairs=RACE_PAIRS))
    finally:
        _stop(proc, server_log)
    assert counts["wrong"] == 0, counts
    assert counts["right"] == RACE_PAIRS and counts["refused"] == RACE_PAIRS and counts["other"] == 0, counts


def _score(base: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}/v1/score", json=body, headers=HEADERS, timeout=30)


def _until_ready(base: str, ready: bool, seconds: float = 30) -> None:
    """Poll /readyz until it says `ready` (the state the test needs, not a fixed sleep)."""
    deadline = time.monotonic() + seconds
    while (httpx.get(f"{base}/readyz", timeout=5).status_code == 200) != ready:
        assert time.monotonic() < deadline, f"/readyz never became {'ready' if ready else 'not ready'}"
        time.sleep(0.2)


def _readable(database: Path, decision_ids: list[str]) -> set[str]:
    """The decision ids among `decision_ids` that a fresh reader finds in the SQLite file."""
    log = DecisionLog(f"sqlite:///{database}")
    try:
        return {d for d in decision_ids if log.get(d) is not None}
    finally:
        log.close()


def test_sqlite_directory_removed_while_serving_is_503_not_ready_and_recovers_by_itself(trained, tmp_path):
    """The decision log's directory vanishes under a running server: every answer is 503 (before, 200s whose
    records went into the deleted file), /readyz goes false, and once the directory is back the service
    is ready again with no restart; every 200 has a record a fresh reader finds."""
    ids = read_dir(trained["data"]).accounts["account_id"].head(3).tolist()
    bodies = _requests_for(trained["data"], ids, AS_OF)
    where = tmp_path / "log"
    database, server_log = where / "d.db", tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])], {"CUREFLOW_DATABASE_URL": f"sqlite:///{database}"},
                        server_log)
    answered: list[str] = []
    try:
        _wait_ready(base, proc)
        first = _score(base, bodies[0])
        assert first.status_code == 200
        shutil.rmtree(where)
        codes = [_score(base, body).status_code for body in bodies * 3]
        assert set(codes) == {503}, codes
        _until_ready(base, ready=False)
        where.mkdir()
        _until_ready(base, ready=True)
        again = _score(base, bodies[1])
        assert again.status_code == 200
        answered.append(again.json()["decision_id"])
        assert proc.poll() is None
    finally:
        out = _stop(proc, server_log)
    assert _readable(database, answered) == set(answered)
    assert '"decision log unavailable: answering 503"' in out or "decision log unavailable" in out


def test_a_truncated_shm_file_never_kills_the_server(trained, tmp_path):
    """SQLite's WAL maps `-shm` into memory: truncating it under a running server killed the process with
    SIGBUS (no log line, no 503, connections reset). The log keeps no mapped file now: answers go on and
    are recorded."""
    ids = read_dir(trained["data"]).accounts["account_id"].head(2).tolist()
    bodies = _requests_for(trained["data"], ids, AS_OF)
    database, server_log = tmp_path / "d.db", tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])], {"CUREFLOW_DATABASE_URL": f"sqlite:///{database}"},
                        server_log)
    decided = []
    try:
        _wait_ready(base, proc)
        assert _score(base, bodies[0]).status_code == 200
        shm = Path(f"{database}-shm")
        if shm.exists():
            os.truncate(shm, 0)
        for body in bodies * 3:
            answer = _score(base, body)
            assert answer.status_code == 200
            decided.append(answer.json()["decision_id"])
        assert proc.poll() is None
    finally:
        _stop(proc, server_log)
    assert _readable(database, decided) == set(decided)


def _raw_post(base: str, raw: bytes) -> httpx.Response:
    return httpx.post(f"{base}/v1/score", content=raw, timeout=30,
                      headers={**HEADERS, "Content-Type": "application/json"})


def test_lone_surrogates_invalid_utf8_and_duplicate_keys_are_422_naming_where_and_stay_out_of_the_log(trained,
                                                                                                   tmp_path):
    """A lone surrogate in any string was a 500 whose traceback wrote the raw value into the log; bytes
    that are not UTF-8 were a 400 that named nothing; a key given twice was read as its last value."""
    body = json.dumps(_requests_for(trained["data"], read_dir(trained["data"]).accounts["account_id"].head(1)
                                    .tolist(), AS_OF)[0])
    marker = "Qx7-private-value"
    cases = [
        (("account", "region"), body.replace('"region": "', f'"region": "{marker}\\ud800', 1).encode()),
        (("account", "account_id"), body.replace('"account_id": "', f'"account_id": "\\udfff{marker}', 1).encode()),
        (("installments", 0, "due_date"), body.replace('"due_date": "', f'"due_date": "\\udc00{marker}', 1).encode()),
        (("account", "\ufffdregion"), body.replace('"region"', '"\\ud800region"', 1).encode()),
        ((), body.replace('"region": "', f'"region": "{marker}\xff', 1).encode("latin-1")),  # not UTF-8
        (("as_of",), body.replace('{"as_of"', f'{{"as_of": "{marker}", "as_of"', 1).encode()),  # given twice
    ]
    server_log = tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])],
                        {"CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "CUREFLOW_LOG_LEVEL": "DEBUG"},
                        server_log)
    try:
        _wait_ready(base, proc)
        answers = [(where, _raw_post(base, raw)) for where, raw in cases]
    finally:
        out = _stop(proc, server_log)
    for where, answer in answers:
        assert answer.status_code == 422, (where, answer.status_code)
        (error,) = answer.json()["detail"]
        assert tuple(error["loc"]) == ("body", *where) and marker not in answer.text, (where, error)
    assert marker not in out and "\\ud800" not in out and "Traceback" not in out


def test_uvicorns_error_log_writes_an_exceptions_type_and_place_never_its_message(capsys):
    """`cureflow serve` hands uvicorn `uvicorn_log_config()`: an error in the app is logged as JSON with its
    type and stack, without the exception's message (uvicorn's own formatter printed it, value and all)."""
    import logging.config

    from serving.observability import uvicorn_log_config

    logging.config.dictConfig(uvicorn_log_config())
    value = "-".join(("Qx7", "private", "value")) + "\ud800"  # not spelled out: the stack quotes code lines
    try:
        raise UnicodeEncodeError("utf-8", value, 17, 18, "surrogates not allowed")
    except UnicodeEncodeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["msg"] == "Exception in ASGI application" and line["error_type"] == "UnicodeEncodeError"
    assert "Qx7-private-value" not in json.dumps(line)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


def test_a_hung_postgresql_is_503_within_seconds_not_a_hang_and_the_log_line_names_the_error(trained, tmp_path,
                                                                                               postgres):
    """Every PostgreSQL process stopped (SIGSTOP): requests were held as long as it hung. Now each is a 503
    within the deadline (CUREFLOW_DECISION_LOG_TIMEOUT_S + 1 s) plus a connect timeout, /readyz says not
    ready, the log line keeps its `error` and `backend`, and the service is ready again once the server runs."""
    if not postgres.controllable:
        pytest.skip("CUREFLOW_TEST_POSTGRES_URL points at a server these tests must not stop")
    bodies = _requests_for(trained["data"], read_dir(trained["data"]).accounts["account_id"].head(2).tolist(), AS_OF)
    server_log = tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])],
                        {"CUREFLOW_DATABASE_URL": postgres.url, "CUREFLOW_DECISION_LOG_TIMEOUT_S": "1"}, server_log)
    try:
        _wait_ready(base, proc)
        assert _score(base, bodies[0]).status_code == 200
        postgres.freeze()
        try:
            timed = []
            for body in bodies:
                started = time.perf_counter()
                timed.append((_score(base, body).status_code, time.perf_counter() - started))
            started = time.perf_counter()
            ready = httpx.get(f"{base}/readyz", timeout=30).status_code
            timed.append((ready, time.perf_counter() - started))
        finally:
            postgres.thaw()
        _until_ready(base, ready=True)
        assert _score(base, bodies[1]).status_code == 200
    finally:
        out = _stop(proc, server_log)
    assert [code for code, _ in timed] == [503, 503, 503] and max(s for _, s in timed) < 2.0 + 2.0 + 2.0, timed
    # a score reads the account's open contests (R-CONTESTED) before it writes: either call meets the hung server
    failed = [json.loads(line) for line in out.splitlines()
              if '"decision log write failed"' in line or '"decision log contest read failed"' in line]
    assert failed and all(f["backend"] == "postgresql" and f["error"] for f in failed), failed


CRM_A, CRM_B, AUDITOR = "crm-a-key-for-tests-0001", "crm-b-key-for-tests-0001", "auditor-key-for-tests-0001"


def test_a_scoring_key_reads_only_its_tenants_decisions_and_an_auditors_reads_are_logged(trained, tmp_path):
    """Any scoring key read any decision, features and all, and ids could be computed. Now: random ids, a
    scoring key sees its own tenant's decisions only (404 for another's, as if absent; a key configured
    without a tenant is of the tenant `default`), an auditor key reads all and scores nothing, and every
    read is in the log with the caller and role, never a key."""
    import uuid

    ids = read_dir(trained["data"]).accounts["account_id"].head(5).tolist()
    bodies = _requests_for(trained["data"], ids, AS_OF)
    server_log = tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])], {
        "CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "CUREFLOW_AUDITOR_KEYS": AUDITOR,
        "CUREFLOW_API_KEYS": f"{CRM_A}@bank-a, {CRM_B}@bank-b, {KEY}"}, server_log)

    def read(key: str, decision_id: str) -> int:
        return httpx.get(f"{base}/v1/decisions/{decision_id}", headers={"X-API-Key": key}, timeout=30).status_code

    try:
        _wait_ready(base, proc)
        decided = [httpx.post(f"{base}/v1/score", json=body, headers={"X-API-Key": CRM_A}, timeout=30).json()
                   ["decision_id"] for body in [*bodies, bodies[0]]]
        own = [read(CRM_A, d) for d in decided]
        crossed = [read(key, d) for key in (CRM_B, KEY) for d in decided]
        audited = [read(AUDITOR, d) for d in decided]
        auditor_scores = httpx.post(f"{base}/v1/score", json=bodies[0], headers={"X-API-Key": AUDITOR}, timeout=30)
    finally:
        out = _stop(proc, server_log)
    assert len(set(decided)) == 6 and all(uuid.UUID(d).version == 4 for d in decided)  # the repeat too
    assert own == [200] * 6 and audited == [200] * 6
    assert crossed == [404] * 12  # 0 cross-tenant reads
    assert auditor_scores.status_code == 403
    reads = [json.loads(line) for line in out.splitlines() if '"decision read"' in line]
    assert sorted(r["decision_id"] for r in reads if r["role"] == "auditor") == sorted(decided)
    assert {(r["role"], r["tenant"]) for r in reads} == {("scoring", "bank-a"), ("scoring", "bank-b"),
                                                          ("scoring", "default"), ("auditor", "default")}
    assert not any(key in out for key in (CRM_A, CRM_B, KEY, AUDITOR))


def _leaves(value, path=()):
    """(path, value) of every string and number leaf of a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield path, value


def _set(body: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(body))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _hostile_bodies(body: dict, rng) -> list[bytes]:
    """What schemathesis does not send: a lone surrogate in every string, every number as text, a key given
    twice in every object, and bytes that are not UTF-8 at random places."""
    text = json.dumps(body)
    out = []
    for path, value in _leaves(body):
        if isinstance(value, str):
            out.append(json.dumps(_set(body, path, value + "\ud800")).encode())  # json.dumps writes \\ud800
        else:
            out.append(json.dumps(_set(body, path, str(value))).encode())
    for key in ("as_of", "account", "account_id", "amount_due", "paid_at", "contact_id", "outcome"):
        first = text.find(f'"{key}"')
        if first < 0:
            continue
        out.append((text[:first] + f'"{key}": 1, ' + text[first:]).encode())
    for _ in range(40):
        raw = bytearray(text.encode())
        raw[rng.randrange(len(raw))] = rng.choice([0x80, 0xC0, 0xFF, 0xED, 0xF5])
        out.append(bytes(raw))
    return out


def test_fuzzing_with_bad_text_duplicate_keys_numbers_as_text_and_huge_headers_never_500s_or_logs_a_value(
        trained, tmp_path):
    """Every hostile body and header gets a 4xx (or, for a head too large to read, a closed connection), never
    a 5xx; the server's log holds none of the request's personal values. Values are marked so a leak is seen."""
    import random

    rng = random.Random(18)
    body = _requests_for(trained["data"], read_dir(trained["data"]).accounts["account_id"].head(1).tolist(),
                         AS_OF)[0]
    body["account"].update(account_id="PII-ACCOUNT-77", region="PII-REGION-77")
    body["contacts"] = [dict(c, contact_id=f"PII-CONTACT-{i}") for i, c in enumerate(body["contacts"][:3])]
    markers = ["PII-ACCOUNT-77", "PII-REGION-77", "PII-CONTACT-", body["account"]["opened_on"]]
    bodies = _hostile_bodies(body, rng)
    headers = [{"X-Request-ID": "PII-HEADER-" + "x" * 100_000}, {"Idempotency-Key": "PII-KEY-" + "k" * 20_000},
               {"X-API-Key": "PII-APIKEY-" + "a" * 50_000}, {f"X-Pad-{i}": "PII-PAD" * 20 for i in range(300)},
               {"Idempotency-Key": "PII-\x7f-KEY"}, {"X-Request-ID": "PII\u00e9-ID"}]
    server_log = tmp_path / "server.log"
    proc, base = _start(["--model", str(trained["bundle_path"])],
                        {"CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "CUREFLOW_LOG_LEVEL": "DEBUG"},
                        server_log)
    codes, header_codes, closed = [], [], 0
    try:
        _wait_ready(base, proc)
        with httpx.Client(timeout=30) as client:
            for raw in bodies:
                codes.append(client.post(f"{base}/v1/score", content=raw,
                                         headers={**HEADERS, "Content-Type": "application/json"}).status_code)
            for extra in headers:
                try:
                    encoded = {k: v.encode("utf-8") for k, v in extra.items()}
                    header_codes.append(client.post(f"{base}/v1/score", json=body,
                                                    headers={**HEADERS, **encoded}).status_code)
                except httpx.RemoteProtocolError:
                    closed += 1
        assert proc.poll() is None
    finally:
        out = _stop(proc, server_log)
    assert len(codes) == len(bodies) > 100 and len(header_codes) + closed == len(headers)
    assert all(400 <= c < 500 for c in codes), sorted(set(codes))  # every hostile body refused, none a 5xx
    assert header_codes[:4] == [431] * 4 and all(c < 500 for c in header_codes), header_codes
    leaked = [m for m in markers if m in out] + [m for m in ("PII-HEADER", "PII-KEY", "PII-APIKEY", "PII-PAD")
                                                 if m in out]
    assert leaked == [] and "Traceback" not in out
