"""Metrics, request ids and JSON logs for the scoring service; nothing here runs at import.

- `make_metrics()` builds the Prometheus metrics on a registry of their own (one per app, so tests and several
  apps in one process never clash); `render()` serves them at GET /metrics.
- `configure_logging(level)` (called by the app factory) makes the `cureflow` logger tree write one JSON object
  per line. Only whitelisted `extra` fields are written: anything else (an account id, a phone number) is
  dropped and its *name* listed under `dropped_fields`, so personal data cannot reach the logs by accident.
- A `request_id` context variable, taken from a safe incoming `X-Request-ID` or generated.
- `RequestObserver`, a pure ASGI middleware that sets the request id, echoes it as `X-Request-ID`, counts the
  request and its latency under the route template (never the raw path) and writes one access log line.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.limits import SHED_KEY

NAMESPACE = "cureflow"
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

REQUEST_ID: ContextVar[str | None] = ContextVar("cureflow_request_id", default=None)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Extra fields a log line may carry. Account ids, names, phone numbers, e-mail and postal addresses are
# personal data and are deliberately absent; add a field here only if it can never hold personal data.
ALLOWED_LOG_FIELDS = frozenset({
    "request_id", "route", "method", "status", "latency_ms", "caller", "model_version", "model_uri", "run_id",
    "policy_version", "decision_id", "action", "tier", "rule", "reason", "count", "n_requests", "n_accounts",
    "error_type", "duration_ms", "in_flight", "max_concurrency", "idempotent_replay",
    "error", "backend",  # the decision log's: an error's class and SQLSTATE only (decisions._describe)
    "role", "tenant",  # of an API key (a tenant is a configured name such as a CRM's, never a customer's)
})
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


# --- metrics -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metrics:
    """The service's metrics, all on `registry`."""

    registry: CollectorRegistry
    requests_total: Counter
    request_latency_seconds: Histogram
    decisions_total: Counter
    rule_blocks_total: Counter
    model_info: Gauge
    shed_total: Counter
    decision_log_errors_total: Counter
    alias_checked: Gauge
    in_flight: Gauge
    score_group_accounts: Histogram
    _model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_model(self, version: str, run_id: str) -> None:
        """Mark the serving model: the previous version's series is removed, so exactly one is 1."""
        with self._model_lock:
            self.model_info.clear()
            self.model_info.labels(version=str(version), run_id=str(run_id)).set(1)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self.requests_total.labels(route=route, method=method, status=str(status)).inc()
        self.request_latency_seconds.labels(route=route).observe(seconds)

    def record_decision(self, action: str, tier: str, blocked_rules: Iterable[str] = ()) -> None:
        """Count one decision and the rules that blocked something in it."""
        self.decisions_total.labels(action=str(action), tier=str(tier)).inc()
        for rule in blocked_rules:
            self.rule_blocks_total.labels(rule=str(rule)).inc()


GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def make_metrics() -> Metrics:
    """Fresh metrics on a dedicated registry (exposed names are prefixed `cureflow_`)."""
    reg = CollectorRegistry(auto_describe=True)
    common: dict[str, Any] = {"namespace": NAMESPACE, "registry": reg}
    return Metrics(
        registry=reg,
        requests_total=Counter("requests_total", "HTTP requests answered", ["route", "method", "status"], **common),
        request_latency_seconds=Histogram("request_latency_seconds", "Time to answer a request", ["route"],
                                          buckets=LATENCY_BUCKETS, **common),
        decisions_total=Counter("decisions_total", "Decisions by next-best action and tier", ["action", "tier"],
                                **common),
        rule_blocks_total=Counter("rule_blocks_total", "Actions blocked, by contact rule", ["rule"], **common),
        model_info=Gauge("model_info", "The model being served (value 1)", ["version", "run_id"], **common),
        shed_total=Counter("shed_total", "Requests refused at once to shed load", ["reason"], **common),
        decision_log_errors_total=Counter("decision_log_errors_total", "Decisions that could not be recorded",
                                          **common),
        alias_checked=Gauge("alias_checked_timestamp_seconds", "When the registry last answered the alias "
                            "watcher (0 = not yet, or the watcher is off)", **common),
        in_flight=Gauge("requests_in_flight", "Requests admitted and not answered yet (health and metrics "
                        "excluded)", **common),
        score_group_accounts=Histogram("score_group_accounts", "Accounts decided together in one group of "
                                       "concurrent score requests", buckets=GROUP_BUCKETS, **common),
    )


def render(metrics: Metrics) -> tuple[bytes, str]:
    """The Prometheus text exposition of `metrics` and its content type, for GET /metrics."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


# --- request ids ---------------------------------------------------------------------------------------------

def new_request_id() -> str:
    """A fresh request id (uuid4 hex)."""
    return uuid.uuid4().hex


def request_id_from_header(value: str | bytes | None) -> str:
    """The caller's `X-Request-ID` if it is a safe token (<= 64 of [A-Za-z0-9._-]), else a new id."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return REQUEST_ID.get()


# --- JSON logs -----------------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id and the whitelisted extra fields."""

    def __init__(self, allowed: Iterable[str] = ALLOWED_LOG_FIELDS):
        super().__init__()
        self.allowed = frozenset(allowed)

    def format(self, record: logging.LogRecord) -> str:
        """Serialise `record`, dropping every extra field that is not whitelisted."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k != "request_id"}
        line.update({k: v for k, v in extras.items() if k in self.allowed})
        dropped = sorted(k for k in extras if k not in self.allowed)
        if dropped:
            line["dropped_fields"] = dropped
        if record.exc_info and record.exc_info[0] is not None:
            line.update(_exception_fields(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


def _exception_fields(exc_info: Any) -> dict[str, Any]:
    """The exception's type and stack (code locations only: its message may quote request data)."""
    exc_type, _, tb = exc_info
    return {"error_type": exc_type.__name__, "stack": "".join(traceback.format_tb(tb)).rstrip()}


class _CureflowHandler(logging.StreamHandler):
    """Marks the handler `configure_logging` installed, so a second call replaces it instead of adding one."""


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None,
                      extra_fields: Iterable[str] = ()) -> logging.Logger:
    """Send the `cureflow` logger tree to `stream` (stdout) as JSON lines; idempotent.

    `extra_fields` widens the whitelist for this process; the logger does not propagate to the root logger, so
    no other handler sees (and formats) these records.
    """
    logger = logging.getLogger(NAMESPACE)
    for old in [h for h in logger.handlers if isinstance(h, _CureflowHandler)]:
        logger.removeHandler(old)
    handler = _CureflowHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(ALLOWED_LOG_FIELDS | frozenset(extra_fields)))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return logger


def uvicorn_log_config(level: str = "WARNING") -> dict[str, Any]:
    """uvicorn's own loggers through `JsonFormatter` (for `uvicorn.run(log_config=...)`). Its default formatter
    writes an exception's message, and a message can quote request data: a lone surrogate's 500 put the raw
    value into the log. Here an error is its type and code locations only; uvicorn's access log is off (the
    app writes its own)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "loggers": {"uvicorn": {"handlers": ["json"], "level": level, "propagate": False},
                    "uvicorn.access": {"handlers": [], "level": level, "propagate": False}},
    }


# --- per-request middleware ----------------------------------------------------------------------------------

def route_template(scope: Scope, routes: Sequence[BaseRoute] = ()) -> str:
    """The matched route's path template (`/v1/decisions/{decision_id}`), or `unmatched`: bounded cardinality.
    A request answered before the router ran (shed, 413, 408) is matched against `routes` here, so it is
    counted under the route it asked for."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] == Match.FULL), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObserver:
    """Pure ASGI middleware: request id in, `X-Request-ID` out, one metric sample and one access log line.

    Requests the load shedder refused (`SHED_KEY` in the scope) get their metric sample but share one log
    line a `shed_log_interval_s` ("load shed", with the count): under a flood, a line for each refusal cost
    a quarter of the answered rate (measured with wrk, 128 connections: 114-130 answered a second with a
    line each, 155 without).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True, shed_log_interval_s: float = 1.0,
                 routes: Sequence[BaseRoute] = ()):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's routes, to name requests answered before routing
        self.access_log = access_log
        self.shed_log_interval_s = shed_log_interval_s
        self.log = logging.getLogger(f"{NAMESPACE}.access")
        self._shed_pending = 0
        self._shed_since = 0.0
        self._shed_logged_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = request_id_from_header(incoming)
        token = REQUEST_ID.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, status, time.perf_counter() - start)
            REQUEST_ID.reset(token)

    def _finish(self, scope: Scope, status: int, seconds: float) -> None:
        """Record the metric sample and the access log line of one request (refusals: see the class)."""
        route, method = route_template(scope, self.routes), scope.get("method", "")
        self.metrics.observe_request(route, method, status, seconds)
        if not self.access_log:
            return
        if SHED_KEY in scope:
            if not self._shed_pending:
                self._shed_since = time.monotonic()
            self._shed_pending += 1
        else:
            self.log.info("request", extra={"route": route, "method": method, "status": status,
                                            "latency_ms": round(seconds * 1000, 3)})
        now = time.monotonic()
        if self._shed_pending and now - self._shed_logged_at >= self.shed_log_interval_s:
            self.log.warning("load shed", extra={"status": 503, "count": self._shed_pending,
                                                 "duration_ms": round((now - self._shed_since) * 1000, 3)})
            self._shed_pending, self._shed_logged_at = 0, now
