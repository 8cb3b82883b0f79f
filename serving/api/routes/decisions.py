"""Decisions: GET /v1/decisions/{id} for an audit, and what happened after a decision, recorded beside it:
POST .../outcome, .../override and .../contest. A scoring key reaches its tenant's decisions only."""

import hashlib
import json
import logging
import uuid
from datetime import UTC
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from models.decision_log import DecisionLog, DecisionLogUnavailable
from models.schemas import Contest, Event, OutcomeReport, Override
from serving.api.deps import Caller, Decisions, IdemKey, MetricsDep, Reader
from serving.api.errors import BODY_PROBLEMS, problems
from serving.observability import Metrics
from serving.security import SCORING

log = logging.getLogger("cureflow.api")
router = APIRouter()


def _loggable_id(text: str) -> str | None:
    """A decision id for the log when it has the shape of one (a UUID), else None: the path is the caller's
    text and may hold anything, personal data included."""
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


@router.get("/v1/decisions/{decision_id}", summary="A recorded decision, for an audit",
            responses=problems(401, 403, 404, 431, 503))
def get_decision(decision_id: str, caller: Reader, request: Request, decisions: Decisions) -> dict[str, Any]:
    """A scoring key sees its tenant's decisions only (another tenant's is a 404, as if absent); auditor
    and admin keys see all. Every read is logged: who, in which role, which decision, found or not."""
    role, tenant = request.state.role, request.state.tenant
    try:
        record = decisions.get(decision_id, tenant=tenant if role == SCORING else None)
    except DecisionLogUnavailable:
        raise HTTPException(status_code=503, detail="the decision log is unavailable") from None
    log.info("decision read", extra={"caller": caller, "role": role, "tenant": tenant,
                                     "decision_id": _loggable_id(decision_id),
                                     "status": 404 if record is None else 200})
    if record is None:
        raise HTTPException(status_code=404, detail="no decision with this id")
    try:
        events = decisions.events(decision_id)
    except DecisionLogUnavailable:
        raise HTTPException(status_code=503, detail="the decision log is unavailable") from None
    return {**record, "events": events}


def feedback(decision_id: str, kind: str, key: str, body: dict, caller: str, request: Request,
             response: Response, decisions: DecisionLog, metrics: Metrics) -> dict[str, Any]:
    """Record what happened after a decision beside it (before answering): 201, or 200 with `duplicate`
    when the same report was recorded before; 404 for a decision this caller's tenant does not have."""
    tenant, role = request.state.tenant, request.state.role
    try:
        if decisions.get(decision_id, tenant=tenant if role == SCORING else None) is None:
            raise HTTPException(status_code=404, detail="no decision with this id")
        event, created = decisions.add_event(decision_id, kind, key, body, caller, tenant)
    except DecisionLogUnavailable:
        metrics.decision_log_errors_total.inc()
        raise HTTPException(status_code=503, detail=f"the decision log cannot be written; the {kind} is not "
                                                    f"recorded, send it again") from None
    log.info("decision feedback", extra={"caller": caller, "tenant": tenant, "kind": kind,
                                         "decision_id": _loggable_id(decision_id), "duplicate": not created})
    response.status_code = 201 if created else 200
    return {**event, "duplicate": not created}


def _body_key(body: dict, idempotency_key: str | None) -> str:
    text = json.dumps(body, sort_keys=True, default=str)
    return idempotency_key or hashlib.sha256(text.encode()).hexdigest()


@router.post("/v1/decisions/{decision_id}/outcome", response_model=Event, status_code=201,
             responses=problems(*BODY_PROBLEMS, 404),
             summary="Report what happened after a decision (one attempt)")
def outcome(decision_id: str, body: OutcomeReport, caller: Caller, request: Request, response: Response,
            decisions: Decisions, metrics: MetricsDep) -> dict[str, Any]:
    """One attempt's outcome; the same attempt (same instant and channel) reported again is counted once."""
    report = body.model_dump(mode="json")
    return feedback(decision_id, "outcome", f"{body.at.astimezone(UTC).isoformat()}|{body.channel}", report,
                    caller, request, response, decisions, metrics)


@router.post("/v1/decisions/{decision_id}/override", response_model=Event, status_code=201,
             responses=problems(*BODY_PROBLEMS, 404),
             summary="A person chose another action than the one recommended")
def override(decision_id: str, body: Override, caller: Caller, request: Request, response: Response,
             decisions: Decisions, metrics: MetricsDep, idempotency_key: IdemKey = None) -> dict[str, Any]:
    report = body.model_dump(mode="json")
    return feedback(decision_id, "override", _body_key(report, idempotency_key), report, caller, request,
                    response, decisions, metrics)


@router.post("/v1/decisions/{decision_id}/contest", response_model=Event, status_code=201,
             responses=problems(*BODY_PROBLEMS, 404),
             summary="The customer contests the automated decision (GDPR art. 22(3))")
def contest(decision_id: str, body: Contest, caller: Caller, request: Request, response: Response,
            decisions: Decisions, metrics: MetricsDep, idempotency_key: IdemKey = None) -> dict[str, Any]:
    report = body.model_dump(mode="json")
    return feedback(decision_id, "contest", _body_key(report, idempotency_key), report, caller, request,
                    response, decisions, metrics)
