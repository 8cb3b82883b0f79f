"""API-key authentication: keys held only as SHA-256 digests, compared in constant time.

Clients send `X-API-Key`. A key has a role and a tenant:
- scoring (a CRM): scores, and reads only the decisions its tenant created. A scoring key is written
  `key@tenant` in CUREFLOW_API_KEYS; a key without `@tenant` belongs to the tenant `default` (the
  configuration before tenants keeps working);
- auditor (CUREFLOW_AUDITOR_KEYS): reads every decision, and each read is logged; scores nothing;
- admin (CUREFLOW_ADMIN_KEYS): admin routes, scoring (as the tenant `default`) and every decision.
401 for an unknown key, 403 for a key whose role may not call the route. In insecure mode (local use) every
request is the admin caller `insecure-local`. The caller id handed to routes and logs is
`key-<first 8 hex of the digest>`, never the key; the role and tenant go to `request.state`.

No `from __future__ import annotations` here: FastAPI must resolve the `Annotated` parameters of the
dependencies built inside the factories below.
"""

import hashlib
import hmac
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from models.decision_log import DEFAULT_TENANT
from serving.settings import Settings

INSECURE_CALLER = "insecure-local"
SCORING, AUDITOR, ADMIN = "scoring", "auditor", "admin"
_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Scoring or admin API key")
API_KEY_SCHEME = _api_key  # the scheme every caller dependency reads (serving.api.deps declares it too)

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

    def identify(self, presented: str | None) -> tuple[str, str] | None:
        """(caller id, tenant) of a matching key; a plain ring's keys are all of DEFAULT_TENANT."""
        caller = self.check(presented)
        return None if caller is None else (caller, DEFAULT_TENANT)


def split_tenant(entry: str) -> tuple[str, str]:
    """`key@tenant` -> (key, tenant); an entry without a valid `@tenant` is a key of DEFAULT_TENANT."""
    key, at, tenant = entry.rpartition("@")
    if at and key and _TENANT.fullmatch(tenant):
        return key, tenant
    return entry, DEFAULT_TENANT


class TenantRings:
    """Scoring keys grouped by tenant, one KeyRing each (digests only). `identify` asks every ring, so the
    time taken does not say which tenant a key belongs to."""

    __slots__ = ("_rings",)

    def __init__(self, entries: Iterable[str | SecretStr] = ()):
        plain = (e.get_secret_value() if isinstance(e, SecretStr) else e for e in entries)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for key, tenant in map(split_tenant, filter(None, plain)):
            by_tenant[tenant].append(key)
        self._rings = tuple((tenant, KeyRing(keys)) for tenant, keys in by_tenant.items())

    def __len__(self) -> int:
        return sum(len(ring) for _, ring in self._rings)

    def __repr__(self) -> str:
        return f"TenantRings({len(self)} keys, {len(self._rings)} tenants)"

    def check(self, presented: str | None) -> str | None:
        found = self.identify(presented)
        return None if found is None else found[0]

    def identify(self, presented: str | None) -> tuple[str, str] | None:
        """(caller id, tenant) of a matching key, or None."""
        found = [(caller, tenant) for tenant, ring in self._rings if (caller := ring.check(presented))]
        return found[0] if found else None


def require_keys(settings: Settings) -> None:
    """Refuse to start an open service by accident: scoring keys are required unless `insecure` is set."""
    if settings.insecure or settings.api_key_values():
        return
    raise ValueError("refusing to start without CUREFLOW_API_KEYS; pass --insecure for local use")


def _unauthorized() -> HTTPException:
    """401 telling the client which scheme to use (the key itself is never echoed)."""
    return HTTPException(status_code=401, detail=f"missing or invalid {API_KEY_HEADER} header",
                         headers={"WWW-Authenticate": "ApiKey"})


def _admitted(request: Request, caller: str, role: str, tenant: str) -> str:
    """Put the caller's id, role and tenant on the request; the caller id."""
    request.state.caller, request.state.role, request.state.tenant = caller, role, tenant
    return caller


def _refuse_roles(found: tuple[str, str, str], refused: dict[str, str]) -> None:
    """403 with the reason when the caller's role is one of `refused` (role -> reason)."""
    reason = refused.get(found[1])
    if reason:
        raise HTTPException(status_code=403, detail=reason)


def _identify(rings: dict[str, KeyRing | TenantRings], key: str | None) -> tuple[str, str, str] | None:
    """(caller id, role, tenant) of the key among the rings by role (every ring is asked), or None."""
    found = [(role, ring.identify(key)) for role, ring in rings.items()]
    return next(((who[0], role, who[1]) for role, who in found if who is not None), None)


def scoring_caller(ring_scoring: KeyRing | TenantRings, ring_admin: KeyRing, insecure: bool = False,
                   ring_auditor: KeyRing | None = None) -> CallerDependency:
    """A dependency for scoring routes: the caller id of a scoring or admin key; 403 for an auditor key,
    401 otherwise."""
    rings = {SCORING: ring_scoring, ADMIN: ring_admin, AUDITOR: ring_auditor or KeyRing()}

    async def caller(request: Request, key: Annotated[str | None, Security(_api_key)]) -> str:
        if insecure:
            return _admitted(request, INSECURE_CALLER, ADMIN, DEFAULT_TENANT)
        found = _identify(rings, key)
        if found is None:
            raise _unauthorized()
        _refuse_roles(found, {AUDITOR: "an auditor key may only read decisions"})
        return _admitted(request, *found)

    return caller


def reader_caller(ring_scoring: KeyRing | TenantRings, ring_admin: KeyRing, ring_auditor: KeyRing,
                  insecure: bool = False) -> CallerDependency:
    """A dependency for reading decisions: the caller id of any key (its role and tenant on the request,
    where the route decides what it may see), else 401."""
    rings = {SCORING: ring_scoring, ADMIN: ring_admin, AUDITOR: ring_auditor}

    async def caller(request: Request, key: Annotated[str | None, Security(_api_key)]) -> str:
        if insecure:
            return _admitted(request, INSECURE_CALLER, ADMIN, DEFAULT_TENANT)
        found = _identify(rings, key)
        if found is None:
            raise _unauthorized()
        return _admitted(request, *found)

    return caller


def admin_caller(ring_admin: KeyRing, ring_scoring: KeyRing | TenantRings, insecure: bool = False,
                 ring_auditor: KeyRing | None = None) -> CallerDependency:
    """A dependency for admin routes: the caller id of an admin key; 403 for a scoring or auditor key, 401
    otherwise."""
    rings = {ADMIN: ring_admin, SCORING: ring_scoring, AUDITOR: ring_auditor or KeyRing()}

    async def caller(request: Request, key: Annotated[str | None, Security(_api_key)]) -> str:
        if insecure:
            return _admitted(request, INSECURE_CALLER, ADMIN, DEFAULT_TENANT)
        found = _identify(rings, key)
        if found is None:
            raise _unauthorized()
        _refuse_roles(found, dict.fromkeys((SCORING, AUDITOR), "this key may not call admin endpoints"))
        return _admitted(request, *found)

    return caller
