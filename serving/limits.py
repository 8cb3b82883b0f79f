"""Overload and body-size guards as pure ASGI middleware (no BaseHTTPMiddleware: microseconds, not milliseconds).

- `LoadShedder` answers 503 with `Retry-After: 1` at once when `max_concurrency` requests are already in
  flight: nothing queues, so latency cannot grow without bound. Health and metrics paths are exempt.
- `BodySizeLimit` answers 413 when `Content-Length` exceeds the limit, or when a body sent without one grows
  past it while the app reads it (the stream is counted chunk by chunk, never buffered here).

Counters are per process: with `--workers N` the service admits up to N x max_concurrency requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_EXEMPT_PATHS = ("/healthz", "/readyz", "/metrics")


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

    `on_shed(reason)` is called for each refusal (e.g. to count it in `shed_total{reason}`). The check and the
    increment run without an `await` between them, so on one event loop the count is exact.
    """

    def __init__(self, app: ASGIApp, max_concurrency: int, exempt_paths: Iterable[str] = DEFAULT_EXEMPT_PATHS,
                 on_shed: Callable[[str], None] | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.app = app
        self.max_concurrency = max_concurrency
        self.exempt_paths = frozenset(exempt_paths)
        self.on_shed = on_shed
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
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _shed(self, send: Send) -> None:
        """Answer 503 at once and report the refusal."""
        if self.on_shed is not None:
            self.on_shed("concurrency")
        await send_json(send, 503, {"detail": "overloaded: too many requests in flight, retry shortly"},
                        headers=[(b"retry-after", b"1")])


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; an HTTPException, so FastAPI answers 413
    itself (instead of turning it into a 400 body-parse error) and `BodySizeLimit` answers for other apps."""

    def __init__(self, max_bytes: int):
        super().__init__(status_code=413, detail=f"request body larger than {max_bytes} bytes")


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None when absent or unreadable (then the stream is counted)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimit:
    """413 for request bodies over `max_bytes`: at once from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        """Answer 413 (the rest of the body is never read; the server drops it with the connection)."""
        await send_json(send, 413, {"detail": f"request body larger than {self.max_bytes} bytes"},
                        headers=[(b"connection", b"close")])
