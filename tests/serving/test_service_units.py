"""Unit tests of the service pieces: settings, API keys, metrics, JSON logs, load shedding and body limits.

No postponed annotations: FastAPI must resolve the `Annotated[..., Depends(...)]` of routes defined in functions.
"""

import ast
import asyncio
import contextlib
import inspect
import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ValidationError

from serving import security
from serving.limits import BodyGuard, LoadShedder
from serving.observability import (
    REQUEST_ID,
    RequestObserver,
    configure_logging,
    make_metrics,
    render,
    request_id_from_header,
)
from serving.security import INSECURE_CALLER, KeyRing, admin_caller, require_keys, scoring_caller
from serving.settings import load_settings

SCORING_KEYS = ["score-key-alpha-0001", "score-key-beta-0002"]
ADMIN_KEY = "admin-key-gamma-0003"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CUREFLOW_* variable from the developer's shell leaks into a test."""
    import os

    for name in [n for n in os.environ if n.upper().startswith("CUREFLOW_")]:
        monkeypatch.delenv(name)
    return monkeypatch


# --- settings ------------------------------------------------------------------------------------------------

def test_settings_read_comma_separated_keys_from_env_and_hide_them(clean_env):
    clean_env.setenv("CUREFLOW_API_KEYS", f" {SCORING_KEYS[0]} ,{SCORING_KEYS[1]},, ")
    clean_env.setenv("CUREFLOW_ADMIN_KEYS", ADMIN_KEY)
    clean_env.setenv("CUREFLOW_DATABASE_URL", "postgresql://svc:db-password-xyz@db/cureflow")  # fixture, not a secret
    clean_env.setenv("CUREFLOW_MAX_CONCURRENCY", "4")
    clean_env.setenv("CUREFLOW_INSECURE", "false")
    s = load_settings()
    assert s.api_key_values() == SCORING_KEYS
    assert s.admin_key_values() == [ADMIN_KEY]
    assert s.max_concurrency == 4 and s.insecure is False
    for text in (repr(s), str(s), s.model_dump_json()):
        for secret in [*SCORING_KEYS, ADMIN_KEY]:
            assert secret not in text
    assert "db-password-xyz" not in repr(s) and "db-password-xyz" not in str(s)


def test_settings_defaults_when_env_is_empty(clean_env):
    s = load_settings()
    assert s.api_keys == [] and s.admin_keys == []
    assert s.model_uri == "models:/cureflow@champion"
    assert s.database_url == "sqlite:///decisions.db"
    assert (s.max_concurrency, s.max_body_bytes, s.reload_interval_s, s.insecure) == (32, 2_000_000, 0.0, False)


def test_settings_overrides_win_over_env_and_are_validated(clean_env):
    clean_env.setenv("CUREFLOW_MODEL_URI", "models:/cureflow@challenger")
    clean_env.setenv("CUREFLOW_LOG_LEVEL", "debug")
    s = load_settings(model_uri="/tmp/bundle", insecure=True)
    assert s.model_uri == "/tmp/bundle" and s.insecure is True and s.log_level == "DEBUG"
    with pytest.raises(ValidationError):
        load_settings(log_level="chatty")
    with pytest.raises(ValidationError):
        load_settings(max_concurrency=0)
    with pytest.raises(ValidationError):
        load_settings(api_kyes="typo")


def test_importing_the_service_modules_has_no_side_effects():
    code = ("import logging, os; os.environ['CUREFLOW_LOG_LEVEL'] = 'not-a-level'; "
            "import serving.settings, serving.security, serving.observability, serving.limits; "
            "lg = logging.getLogger('cureflow'); "
            "print(len(lg.handlers), lg.propagate, len(logging.getLogger().handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["0", "True", "0"]


# --- key ring ------------------------------------------------------------------------------------------------

def _flatten(value: object) -> list[object]:
    """Every leaf inside nested tuples, lists, sets and dicts."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in (*_flatten(k), *_flatten(v))]
    if isinstance(value, list | tuple | set | frozenset):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def test_key_ring_holds_only_digests_never_a_plain_key():
    ring = KeyRing([*SCORING_KEYS, ADMIN_KEY])
    assert not hasattr(ring, "__dict__")
    leaves = [leaf for name in type(ring).__slots__ for leaf in _flatten(getattr(ring, name))]
    assert len(leaves) == 3 and all(isinstance(leaf, bytes) and len(leaf) == 32 for leaf in leaves)
    for key in [*SCORING_KEYS, ADMIN_KEY]:
        assert all(key not in repr(leaf) and key.encode() not in leaf for leaf in leaves)
        assert key not in repr(ring)


def test_key_ring_accepts_every_rotated_key_and_rejects_others():
    ring = KeyRing(SCORING_KEYS)
    ids = [ring.check(k) for k in SCORING_KEYS]
    assert all(i is not None for i in ids) and len(set(ids)) == 2
    for wrong in [None, "", ADMIN_KEY, SCORING_KEYS[0][:-1], SCORING_KEYS[0] + "x", SCORING_KEYS[0].upper()]:
        assert ring.check(wrong) is None
    assert KeyRing([]).check(SCORING_KEYS[0]) is None


def test_tenant_rings_name_each_keys_tenant_default_without_one_and_hold_only_digests():
    from serving.security import DEFAULT_TENANT, TenantRings

    rings = TenantRings([f"{SCORING_KEYS[0]}@bank-a", f"{SCORING_KEYS[1]}@bank-b", ADMIN_KEY, "odd@key@x y"])
    assert rings.identify(SCORING_KEYS[0])[1] == "bank-a" and rings.identify(SCORING_KEYS[1])[1] == "bank-b"
    assert rings.identify(ADMIN_KEY)[1] == DEFAULT_TENANT
    assert rings.identify("odd@key@x y")[1] == DEFAULT_TENANT  # not a tenant name: the whole entry is the key
    assert rings.identify(f"{SCORING_KEYS[0]}@bank-a") is None and rings.identify("odd@key") is None
    assert rings.check(SCORING_KEYS[0]) == KeyRing([SCORING_KEYS[0]]).check(SCORING_KEYS[0])
    leaves = [leaf for _, ring in rings._rings for leaf in ring._digests]
    assert len(leaves) == 4 and all(isinstance(leaf, bytes) and len(leaf) == 32 for leaf in leaves)
    assert not any(key in repr(rings) for key in [*SCORING_KEYS, ADMIN_KEY])


def test_caller_id_is_stable_and_reveals_nothing_of_the_key():
    first, again = KeyRing(SCORING_KEYS).check(SCORING_KEYS[1]), KeyRing([SCORING_KEYS[1]]).check(SCORING_KEYS[1])
    assert first == again
    assert re.fullmatch(r"key-[0-9a-f]{8}", first)
    assert SCORING_KEYS[1] not in first and SCORING_KEYS[1][:8] not in first


def test_security_compares_digests_in_constant_time_and_never_with_equality():
    tree = ast.parse(inspect.getsource(security))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert any(c.func.attr == "compare_digest" and getattr(c.func.value, "id", "") == "hmac" for c in calls)
    risky = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
    offending = [ast.unparse(n) for n in ast.walk(tree)
                 if isinstance(n, ast.Compare) and any(isinstance(op, risky) for op in n.ops)]
    assert offending == []


def test_require_keys_refuses_to_start_without_scoring_keys_unless_insecure(clean_env):
    with pytest.raises(ValueError, match="CUREFLOW_API_KEYS.*--insecure"):
        require_keys(load_settings())
    with pytest.raises(ValueError):
        require_keys(load_settings(api_keys=" , ", admin_keys=ADMIN_KEY))
    require_keys(load_settings(insecure=True))
    require_keys(load_settings(api_keys=SCORING_KEYS[0]))


# --- auth dependencies on a tiny app -------------------------------------------------------------------------

def _auth_app(insecure: bool = False) -> FastAPI:
    """Two routes: one for scoring callers, one for admins."""
    scoring, admin = KeyRing(SCORING_KEYS), KeyRing([ADMIN_KEY])
    app = FastAPI()
    score_dep, admin_dep = scoring_caller(scoring, admin, insecure), admin_caller(admin, scoring, insecure)

    @app.get("/score")
    async def score(caller: Annotated[str, Depends(score_dep)], request: Request) -> dict[str, str]:
        return {"caller": caller, "state": request.state.caller}

    @app.get("/admin")
    async def admin_route(caller: Annotated[str, Depends(admin_dep)]) -> dict[str, str]:
        return {"caller": caller}

    return app


@pytest.fixture(scope="module")
def auth_client() -> TestClient:
    return TestClient(_auth_app())


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "not-a-key"}, {"X-API-Key": ""}])
@pytest.mark.parametrize("path", ["/score", "/admin"])
def test_missing_or_wrong_key_is_401_with_challenge(auth_client, path, headers):
    resp = auth_client.get(path, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "ApiKey"
    assert "not-a-key" not in resp.text


@pytest.mark.parametrize("key", SCORING_KEYS)
def test_scoring_key_scores_but_is_forbidden_on_admin_routes(auth_client, key):
    resp = auth_client.get("/score", headers={"X-API-Key": key})
    assert resp.status_code == 200
    assert resp.json()["caller"] == KeyRing([key]).check(key) == resp.json()["state"]
    assert auth_client.get("/admin", headers={"X-API-Key": key}).status_code == 403


def test_admin_key_is_accepted_on_scoring_and_admin_routes(auth_client):
    expected = KeyRing([ADMIN_KEY]).check(ADMIN_KEY)
    for path in ("/score", "/admin"):
        resp = auth_client.get(path, headers={"X-API-Key": ADMIN_KEY})
        assert resp.status_code == 200 and resp.json()["caller"] == expected


def test_insecure_mode_lets_every_request_in_as_the_local_caller():
    client = TestClient(_auth_app(insecure=True))
    for path in ("/score", "/admin"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.json()["caller"] == INSECURE_CALLER


def test_api_key_scheme_is_documented_in_openapi(auth_client):
    schemes = auth_client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert any(s == {"type": "apiKey", "in": "header", "name": "X-API-Key", **s} for s in schemes.values())


# --- metrics -------------------------------------------------------------------------------------------------

def _samples(metrics, name: str) -> list:
    """The samples of one metric family, parsed back from the exposition text."""
    body, _ = render(metrics)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return families[name].samples


def test_metrics_render_every_service_metric_on_its_own_registry():
    m = make_metrics()
    m.observe_request("/v1/score", "POST", 200, 0.004)
    m.record_decision("call", "high", blocked_rules=["R-HOURS", "R-CONSENT"])
    m.shed_total.labels(reason="concurrency").inc()
    m.decision_log_errors_total.inc()
    m.set_model("7", "run123")
    body, content_type = render(m)
    text = body.decode()
    assert content_type.startswith("text/plain")
    for name in ("cureflow_requests_total", "cureflow_request_latency_seconds_bucket", "cureflow_decisions_total",
                 "cureflow_rule_blocks_total", "cureflow_model_info", "cureflow_shed_total",
                 "cureflow_decision_log_errors_total", "cureflow_alias_checked_timestamp_seconds"):
        assert name in text
    assert 'le="0.001"' in text and 'le="0.1"' in text
    other = make_metrics()  # a second app in the same process: no clash, nothing shared
    assert _samples(other, "cureflow_requests") == [] and len(_samples(m, "cureflow_requests")) > 0


def test_model_info_swap_leaves_exactly_one_series():
    m = make_metrics()
    m.set_model("3", "run-a")
    m.set_model("4", "run-b")
    series = [(s.labels, s.value) for s in _samples(m, "cureflow_model_info")]
    assert series == [({"version": "4", "run_id": "run-b"}, 1.0)]


def test_a_background_task_that_dies_says_so_in_the_log(caplog):
    from serving.api.holder import _background

    async def broken():
        raise RuntimeError("registry client crashed")

    async def idle():
        await asyncio.sleep(60)

    async def main():
        dead, cancelled = _background(broken(), "alias watcher"), _background(idle(), "load retry")
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.05)
        return dead, cancelled

    with caplog.at_level(logging.ERROR, logger="cureflow.api"):
        dead, cancelled = asyncio.run(main())
    assert dead.done() and cancelled.cancelled()
    stopped = [r for r in caplog.records if r.getMessage() == "alias watcher stopped"]
    assert len(stopped) == 1 and "registry client crashed" in str(stopped[0].exc_info[1])
    assert not any("load retry" in r.getMessage() for r in caplog.records)  # a cancel at shutdown is quiet


def test_request_observer_counts_by_route_template_and_echoes_request_id():
    app, m = FastAPI(), make_metrics()

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"request_id": REQUEST_ID.get() or ""}

    client = TestClient(RequestObserver(app, m, access_log=False))
    resp = client.get("/items/A123", headers={"X-Request-ID": "crm-42.a_b"})
    assert resp.headers["x-request-id"] == "crm-42.a_b" == resp.json()["request_id"]
    bad = client.get("/items/A124", headers={"X-Request-ID": "x" * 65})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
    counts = {(s.labels["route"], s.labels["status"]): s.value for s in _samples(m, "cureflow_requests")
              if s.name.endswith("_total")}
    assert counts == {("/items/{item_id}", "200"): 2.0}
    assert "A123" not in render(m)[0].decode()


# --- JSON logs -----------------------------------------------------------------------------------------------

@pytest.fixture
def log_stream():
    """The cureflow logger tree writing JSON into a buffer; restored afterwards."""
    logger = logging.getLogger("cureflow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_log_lines_carry_request_id_and_drop_personal_fields(log_stream):
    token = REQUEST_ID.set("req-abc")
    try:
        logging.getLogger("cureflow.api").info("decision made", extra={
            "decision_id": "d-1", "tier": "high", "latency_ms": 3.2, "account_id": "A-998877",
            "phone": "090-1234-5678"})
    finally:
        REQUEST_ID.reset(token)
    raw = log_stream.getvalue()
    (line,) = _lines(log_stream)
    assert line["request_id"] == "req-abc" and line["msg"] == "decision made" and line["logger"] == "cureflow.api"
    assert {"ts", "level"} <= line.keys()
    assert (line["decision_id"], line["tier"], line["latency_ms"]) == ("d-1", "high", 3.2)
    assert "account_id" not in line and "phone" not in line
    assert "A-998877" not in raw and "090-1234-5678" not in raw
    assert line["dropped_fields"] == ["account_id", "phone"]


def test_configure_logging_twice_writes_each_record_once(log_stream):
    configure_logging("INFO", stream=log_stream)
    logging.getLogger("cureflow.batch").info("done", extra={"count": 5})
    logging.getLogger("cureflow.batch").debug("hidden")
    assert [(line["msg"], line["count"]) for line in _lines(log_stream)] == [("done", 5)]


def test_logged_exception_keeps_type_and_stack_but_not_its_message(log_stream):
    phone = "090-" + "1234-5678"  # built at run time, so the stack's source lines cannot contain it
    try:
        raise ValueError(f"account A-998877 phone {phone}")
    except ValueError:
        logging.getLogger("cureflow.api").exception("scoring failed")
    (line,) = _lines(log_stream)
    assert line["error_type"] == "ValueError" and "test_service_units.py" in line["stack"]
    assert "090-1234-5678" not in log_stream.getvalue()


@pytest.mark.parametrize("value", ["abc-DEF_1.2", "x" * 64, b"crm-7"])
def test_safe_incoming_request_id_is_kept(value):
    assert request_id_from_header(value) == (value.decode() if isinstance(value, bytes) else value)


@pytest.mark.parametrize("value", [None, "", "x" * 65, "a b", "id\nforged-line", "<script>", "ä"])
def test_unsafe_incoming_request_id_is_replaced(value):
    assert re.fullmatch(r"[0-9a-f]{32}", request_id_from_header(value))


def test_sync_route_logs_with_the_request_id_sent_back(log_stream):
    app = FastAPI()

    @app.get("/work")
    def work() -> dict[str, bool]:  # plain def: runs in the threadpool
        logging.getLogger("cureflow.api").info("working")
        return {"ok": True}

    resp = TestClient(RequestObserver(app, make_metrics())).get("/work")
    lines = _lines(log_stream)
    assert [line["msg"] for line in lines] == ["working", "request"]
    assert {line["request_id"] for line in lines} == {resp.headers["x-request-id"]}
    assert (lines[1]["route"], lines[1]["status"], lines[1]["method"]) == ("/work", 200, "GET")


# --- load shedding -------------------------------------------------------------------------------------------

SLOW_SECONDS = 2.0


def _slow_app(release: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        with contextlib.suppress(TimeoutError):  # a queued request would answer 200, late: the test says so
            await asyncio.wait_for(release.wait(), SLOW_SECONDS)
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _saturate_and_probe() -> dict:
    """Two slow requests in flight under max_concurrency=2, then a third one and a health check."""
    release, shed = asyncio.Event(), []
    shedder = LoadShedder(_slow_app(release), max_concurrency=2, on_shed=shed.append)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shedder), base_url="http://t") as client:
        slow = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        while shedder.in_flight < 2:
            await asyncio.sleep(0.005)
        start = time.perf_counter()
        third = await client.get("/slow")
        elapsed = time.perf_counter() - start
        health = await client.get("/healthz")
        pending = not any(t.done() for t in slow)
        release.set()
        first_two = await asyncio.gather(*slow)
        after = await client.get("/slow")
    return {"third": third, "elapsed": elapsed, "health": health, "pending": pending, "first_two": first_two,
            "after": after, "shed": shed, "in_flight": shedder.in_flight}


def test_load_shedder_refuses_a_third_request_at_once_and_keeps_health_open():
    r = asyncio.run(_saturate_and_probe())
    assert r["third"].status_code == 503 and r["third"].headers["retry-after"] == "1"
    assert "overloaded" in r["third"].json()["detail"]
    assert r["elapsed"] < 0.1 * SLOW_SECONDS and r["pending"]
    assert r["health"].status_code == 200
    assert [x.status_code for x in r["first_two"]] == [200, 200]
    assert r["after"].status_code == 200 and r["in_flight"] == 0
    assert r["shed"] == ["concurrency"]


def test_refusals_share_a_log_line_a_second_and_every_answer_keeps_its_metric(log_stream):
    """A flood of refusals must not cost a log line each: the first is logged at once, the rest are
    counted into the next "load shed" line once the interval has passed; answers keep their own lines."""
    metrics = make_metrics()

    async def flood() -> list[int]:
        release = asyncio.Event()
        app = _slow_app(release)
        shedder = LoadShedder(app, max_concurrency=2)
        observer = RequestObserver(shedder, metrics, shed_log_interval_s=0.3, routes=app.router.routes)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=observer), base_url="http://t") as client:
            slow = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
            while shedder.in_flight < 2:
                await asyncio.sleep(0.005)
            codes = [(await client.get("/slow")).status_code for _ in range(10)]
            await asyncio.sleep(0.35)
            codes.append((await client.get("/slow")).status_code)  # the 11th refusal, past the interval
            release.set()
            codes += [r.status_code for r in await asyncio.gather(*slow)]
        return codes

    codes = asyncio.run(flood())
    assert codes == [503] * 11 + [200, 200]
    lines = _lines(log_stream)
    shed = [line for line in lines if line["msg"] == "load shed"]
    assert [(line["count"], line["status"], line["level"]) for line in shed] == [(1, 503, "WARNING"),
                                                                                 (10, 503, "WARNING")]
    assert shed[1]["duration_ms"] >= 300
    assert [(line["msg"], line["status"]) for line in lines if line["msg"] == "request"] == [("request", 200)] * 2
    assert metrics.requests_total.labels(route="/slow", method="GET", status="503")._value.get() == 11  # not unmatched


def test_load_shedder_rejects_a_limit_below_one():
    with pytest.raises(ValueError):
        LoadShedder(FastAPI(), max_concurrency=0)


# --- body size -----------------------------------------------------------------------------------------------

class Payload(BaseModel):
    text: str


def _body_app(calls: list[int]) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    def echo(body: Payload) -> dict[str, int]:
        calls.append(len(body.text))
        return {"length": len(body.text)}

    return app


def test_body_limit_rejects_a_large_content_length_before_the_app_runs():
    calls: list[int] = []
    client = TestClient(BodyGuard(_body_app(calls), max_bytes=1000))
    resp = client.post("/echo", content=json.dumps({"text": "x" * 2000}), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "1000" in resp.json()["detail"]
    assert calls == []
    assert client.post("/echo", json={"text": "x" * 100}).json() == {"length": 100}


def test_body_limit_rejects_a_chunked_body_without_content_length():
    calls: list[int] = []
    client = TestClient(BodyGuard(_body_app(calls), max_bytes=1000))
    chunks = [b'{"text": "', *([b"y" * 300] * 5), b'"}']
    resp = client.post("/echo", content=iter(chunks), headers={"content-type": "application/json"})
    assert resp.request.headers.get("content-length") is None
    assert resp.status_code == 413
    assert calls == []


def test_body_limit_counts_streamed_chunks_and_stops_reading_past_the_limit():
    reads, sent = [], []

    async def receive() -> dict:
        reads.append(1)
        return {"type": "http.request", "body": b"z" * 300, "more_body": len(reads) < 100}

    async def send(message: dict) -> None:
        sent.append(message)

    async def reading_app(scope, receive_, send_) -> None:
        while (await receive_()).get("more_body"):
            pass
        await send_({"type": "http.response.start", "status": 200, "headers": []})
        await send_({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodyGuard(reading_app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert len(reads) == 4


def _stalled_body(first: bytes):
    """A receive that sends `first`, says more is coming, then never sends it."""
    sent = []

    async def receive() -> dict:
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


def test_body_guard_answers_408_when_the_body_stalls_and_never_runs_the_app():
    calls, sent = [], []

    async def app(scope, receive_, send_) -> None:
        calls.append(1)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers": [(b"content-length", b"1000")]}
    start = time.perf_counter()
    asyncio.run(BodyGuard(app, max_bytes=2000, timeout_s=0.2)(scope, _stalled_body(b'{"as_of"'), send))
    assert 0.2 <= time.perf_counter() - start < 1.0
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert calls == []


def test_a_stalled_body_holds_no_scoring_slot():
    """The guard outside the shedder (as in the service): a request whose body never completes must not
    keep a fast request out, even with a single slot."""
    release = asyncio.Event()
    stack = BodyGuard(LoadShedder(_slow_app(release), max_concurrency=1), max_bytes=2000, timeout_s=5)

    async def run() -> int:
        stalled = asyncio.create_task(stack({"type": "http", "method": "POST", "path": "/slow", "headers": []},
                                            _stalled_body(b"{"), lambda message: asyncio.sleep(0)))
        await asyncio.sleep(0.05)
        release.set()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack), base_url="http://t") as client:
            status = (await client.get("/slow")).status_code
        stalled.cancel()
        return status

    assert asyncio.run(run()) == 200
