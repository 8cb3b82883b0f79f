"""Overload and body-size guards as pure ASGI middleware (no BaseHTTPMiddleware: microseconds, not milliseconds).

- `LoadShedder` answers 503 with `Retry-After: 1` at once when `max_concurrency` requests are already in
  flight: nothing queues, so latency cannot grow without bound. Health and metrics paths are exempt.
- `BodyGuard` reads each body whole before the app (and the shedder) see the request: 413 past the size
  limit, 408 past the time limit, so a slow sender cannot hold a scoring slot; 422 for a JSON body Python
  would misread (`json_problem`: bytes that are not UTF-8, a lone surrogate, a key given twice); a body it
  parsed goes to the app in the scope (`PARSED_KEY`), so the app does not parse it again; 431 for
  headers over MAX_HEADER_BYTES in all (uvicorn's httptools parser takes a 100 KB header).

Counters are per process: with `--workers N` the service admits up to N x max_concurrency requests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_EXEMPT_PATHS = ("/healthz", "/readyz", "/metrics")
MAX_HEADER_BYTES = 16_384  # all of a request's header names and values (h11's own limit is 16 KiB too)


async def send_json(send: Send, status: int, body: dict[str, object],
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response straight to the ASGI server."""
    payload = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode("ascii")), *headers]})
    await send({"type": "http.response.body", "body": payload})


SHED_KEY = "cureflow.shed"  # set in the ASGI scope of a request the shedder refused, to its reason


class LoadShedder:
    """Refuse (503, `Retry-After: 1`) any non-exempt request that arrives while `max_concurrency` are in flight.

    `on_shed(reason)` is called for each refusal (e.g. to count it in `shed_total{reason}`), and `on_count(n)`
    with the number in flight each time it changes (a gauge: a test waits on it for requests to be inside).
    The check and the increment run without an `await` between them, so on one event loop the count is exact.
    """

    def __init__(self, app: ASGIApp, max_concurrency: int, exempt_paths: Iterable[str] = DEFAULT_EXEMPT_PATHS,
                 on_shed: Callable[[str], None] | None = None, on_count: Callable[[int], None] | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.app = app
        self.max_concurrency = max_concurrency
        self.exempt_paths = frozenset(exempt_paths)
        self.on_shed = on_shed
        self.on_count = on_count or (lambda n: None)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            scope[SHED_KEY] = "concurrency"  # read by the access log, which summarises refusals
            await self._shed(send)
            return
        self.in_flight += 1
        self.on_count(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.on_count(self.in_flight)

    async def _shed(self, send: Send) -> None:
        """Answer 503 at once and report the refusal."""
        if self.on_shed is not None:
            self.on_shed("concurrency")
        await send_json(send, 503, {"detail": "overloaded: too many requests in flight, retry shortly"},
                        headers=[(b"retry-after", b"1")])


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None when absent or unreadable (then the stream is counted)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _TooLarge(Exception):
    """The body passed the limit while it was read."""


class _Disconnected(Exception):
    """The client went away before its body was complete."""


class BodyGuard:
    """Reads the whole request body before the app runs, so the app gets it in one message:

    - 413 when it is over `max_bytes`: at once from `Content-Length`, else as soon as the chunks read pass
      the limit (the rest is never read; the connection is closed);
    - 408 when it has not all arrived within `timeout_s` of the request's head.

    It sits outside `LoadShedder`: a client that sends its body slowly (or never) holds a connection, not
    one of the scoring slots. Before, four connections that sent half a body each held all four slots of a
    server started with `CUREFLOW_MAX_CONCURRENCY=4`, and it refused everyone else with 503.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0):
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            await send_json(send, 431, {"detail": f"request headers larger than {MAX_HEADER_BYTES} bytes"},
                            headers=[(b"connection", b"close")])
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except _TooLarge:
            await self._reject(send)
            return
        except TimeoutError:
            await send_json(send, 408, {"detail": f"request body not received within {self.timeout_s:g} s"},
                            headers=[(b"connection", b"close")])
            return
        except _Disconnected:
            return
        if body:
            problem, parsed = checked_json(body)
            if problem is not None:
                await send_json(send, 422, {"detail": [problem]})
                return
            if parsed is not NOT_PARSED:
                scope[PARSED_KEY] = parsed  # the app takes this parse (api/routes: ParsedOnce), not a second one
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _reject(self, send: Send) -> None:
        """Answer 413 (the rest of the body is never read; the server drops it with the connection)."""
        await send_json(send, 413, {"detail": f"request body larger than {self.max_bytes} bytes"},
                        headers=[(b"connection", b"close")])


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _DuplicateKey(ValueError):
    """A JSON object names the same key twice."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads: the object, or _DuplicateKey naming the key given twice."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def _lone_surrogate_at(value: Any) -> list[str | int] | None:
    """The path of the first key or string holding a lone surrogate (it cannot be encoded, logged or stored),
    or None. Walks with a stack of its own: the parser took the depth, the walk must not fail on it."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and _has_surrogate(item):
            return path
        if isinstance(item, dict):
            for key, inner in item.items():
                if _has_surrogate(key):
                    return [*path, _printable(key)]
                stack.append(([*path, key], inner))
        elif isinstance(item, list):
            stack.extend(([*path, i], inner) for i, inner in enumerate(item))
    return None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _printable(text: str) -> str:
    """A key for an error message, with surrogates as U+FFFD (a lone one cannot go out as UTF-8)."""
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


PARSED_KEY = "cureflow.json"  # set in the ASGI scope by BodyGuard to the body's parse, when it has one


def json_problem(body: bytes) -> dict[str, Any] | None:
    """A 422 error item (FastAPI's shape, naming where; never the value) when `body` is JSON that Python would
    misread, else None: bytes that are not UTF-8, a string or key with a lone surrogate (`\\ud800` is valid
    JSON text but no character: it made a 500 and its traceback carried the value into the log), or an
    object that gives a key twice (the parser would keep the last one silently). Bodies that are not JSON
    at all are left to the app, which names the parse error."""
    return checked_json(body)[0]


def checked_json(body: bytes) -> tuple[dict[str, Any] | None, Any]:
    """`json_problem`'s answer and the body's parse: (None, the value) for a good body, (problem, NOT_PARSED)
    for one it refuses, (None, NOT_PARSED) for one that is not JSON text (the app names the error). The value
    is what `json.loads(body)` gives (the hook that finds a key given twice builds the same dicts), so the app
    may take it instead of parsing the body a second time."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return {"loc": ["body"], "msg": f"the body is not valid UTF-8 (byte {err.start})",
                "type": "utf8_invalid"}, NOT_PARSED
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as err:
        return {"loc": ["body", _printable(str(err))], "msg": "this key is given twice in one object",
                "type": "duplicate_key"}, NOT_PARSED
    except (ValueError, RecursionError):
        return None, NOT_PARSED
    if _SURROGATE_ESCAPE.search(body) and (path := _lone_surrogate_at(parsed)) is not None:
        return {"loc": ["body", *path], "msg": "a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character",
                "type": "surrogate"}, NOT_PARSED
    return None, parsed


NOT_PARSED = object()
