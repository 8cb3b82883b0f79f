"""API-key authentication: keys held only as SHA-256 digests, compared in constant time.

Clients send `X-API-Key`. Scoring routes accept scoring and admin keys; admin routes accept admin keys only
(401 for an unknown key, 403 for a scoring key). In insecure mode (local use) every request is the caller
`insecure-local`. The caller id handed to routes and logs is `key-<first 8 hex of the digest>`, never the key.

No `from __future__ import annotations` here: FastAPI must resolve the `Annotated` parameters of the
dependencies built inside the factories below.
"""

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from serving.settings import Settings

INSECURE_CALLER = "insecure-local"
API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Scoring or admin API key")

CallerDependency = Callable[..., Awaitable[str]]


def _digest(key: str) -> bytes:
    """SHA-256 of a key's UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """A set of accepted keys, stored only as digests; `check` names the caller without revealing the key."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str | SecretStr] = ()):
        plain = (k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys)
        self._digests: tuple[bytes, ...] = tuple(dict.fromkeys(_digest(k) for k in plain if k))

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    @staticmethod
    def caller_id(digest: bytes) -> str:
        """The public name of a key: stable across restarts, useless for authenticating."""
        return f"key-{digest.hex()[:8]}"

    def check(self, presented: str | None) -> str | None:
        """The caller id if `presented` is one of the keys, else None.

        Every stored digest is compared (no early exit), each with `hmac.compare_digest`, so the time taken
        does not say whether or which key matched.
        """
        if not presented:
            return None
        digest = _digest(presented)
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(digest, stored)
        return self.caller_id(digest) if matched else None


def require_keys(settings: Settings) -> None:
    """Refuse to start an open service by accident: scoring keys are required unless `insecure` is set."""
    if settings.insecure or settings.api_key_values():
        return
    raise ValueError("refusing to start without CUREFLOW_API_KEYS; pass --insecure for local use")


def _unauthorized() -> HTTPException:
    """401 telling the client which scheme to use (the key itself is never echoed)."""
    return HTTPException(status_code=401, detail=f"missing or invalid {API_KEY_HEADER} header",
                         headers={"WWW-Authenticate": "ApiKey"})


def scoring_caller(ring_scoring: KeyRing, ring_admin: KeyRing, insecure: bool = False) -> CallerDependency:
    """A dependency for scoring routes: the caller id of a scoring or admin key, else 401."""

    async def caller(request: Request, key: Annotated[str | None, Security(_api_key)]) -> str:
        if insecure:
            request.state.caller = INSECURE_CALLER
            return INSECURE_CALLER
        found = ring_scoring.check(key) or ring_admin.check(key)
        if found is None:
            raise _unauthorized()
        request.state.caller = found
        return found

    return caller


def admin_caller(ring_admin: KeyRing, ring_scoring: KeyRing, insecure: bool = False) -> CallerDependency:
    """A dependency for admin routes: the caller id of an admin key; 403 for a scoring key, 401 otherwise."""

    async def caller(request: Request, key: Annotated[str | None, Security(_api_key)]) -> str:
        if insecure:
            request.state.caller = INSECURE_CALLER
            return INSECURE_CALLER
        found = ring_admin.check(key)
        if found is not None:
            request.state.caller = found
            return found
        if ring_scoring.check(key) is not None:
            raise HTTPException(status_code=403, detail="this key may not call admin endpoints")
        raise _unauthorized()

    return caller
