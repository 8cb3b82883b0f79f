"""Errors: every error body's schema, the errors each route documents in OpenAPI, and the exception handlers
that answer a request the validation or the contract refuses."""

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from models.contract import ContractError


class Problem(BaseModel):
    """Every error's body: `detail`, a sentence, or for a 422 the list of fields at fault (`loc`, `msg`, ...)."""

    detail: str | list[dict[str, Any]]


PROBLEMS = {
    401: "no valid X-API-Key",
    403: "the key's role may not call this route",
    404: "no such decision, or another tenant's",
    408: "the request body did not arrive in time",
    409: "the new model failed its smoke test; the old one keeps serving",
    413: "the request body is too large",
    422: "the request is not valid: the body names each field at fault",
    431: "the request headers are too large",
    503: "not ready: no model loaded, the decision log cannot be written (no answer without its record), or "
         "too many requests in flight (retry after the Retry-After seconds)",
}


BODY_PROBLEMS = (401, 403, 408, 413, 422, 431, 503)


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route may answer, each with the error body's schema."""
    return {code: {"model": Problem, "description": PROBLEMS[code]} for code in codes}


def _finite(value: Any) -> Any:
    """The value with every NaN or infinity replaced by its JSON-ish name, so the standard encoder takes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, except that a non-finite input is echoed as text: `NaN` in a body would otherwise
    make the error itself unserialisable (a 500)."""
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(err.errors()))})


async def contract_error(request: Request, err: ContractError) -> JSONResponse:
    """A request the contract refuses (a table, a column, the rows at fault): 422 with the same body shape."""
    return JSONResponse(status_code=422, content={"detail": [{
        "loc": ["body", err.table, err.column], "msg": str(err), "type": "contract_error", "rows": err.rows}]})


def add_exception_handlers(app: FastAPI) -> None:
    """The handlers above, on `app`."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ContractError, contract_error)
