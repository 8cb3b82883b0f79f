"""Scoring: POST /v1/score and /v1/score/batch. Score, record, then answer: every decision is appended to the
decision log before the answer leaves; a replayed Idempotency-Key returns the recorded answers unchanged."""

import hashlib
import json
import logging
import uuid

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.routing import APIRoute

from models.decision_log import (
    DecisionLog,
    DecisionLogUnavailable,
    DecisionRecord,
    IdempotencyConflict,
    IdempotencyMismatch,
)
from models.registry import LoadedModel
from models.rules import RULE_IDS
from models.schemas import Answer, BatchAnswer, BatchRequest, ScoreRequest
from models.scoring import GroupScorer
from serving.api.deps import Caller, Decisions, IdemKey, Loaded, MetricsDep, Scorer
from serving.api.errors import BODY_PROBLEMS, problems
from serving.limits import PARSED_KEY
from serving.observability import Metrics, current_request_id

log = logging.getLogger("cureflow.api")


class ParsedOnce(APIRoute):
    """A route whose JSON body is parsed once: FastAPI takes the parse the body guard made for its checks
    (`serving.limits.PARSED_KEY`, the same value `json.loads` gives) instead of parsing the body again.
    Without one (a body the guard could not parse, an app without the guard) FastAPI parses as always."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def parsed_once(request: Request) -> Response:
            if PARSED_KEY in request.scope:
                request._json = request.scope[PARSED_KEY]  # Starlette's Request.json() returns it when set
            return await handler(request)

        return parsed_once


router = APIRouter(route_class=ParsedOnce)


def _records(pairs, loaded: LoadedModel, request_id: str, caller: str, tenant: str, key: str | None,
             fingerprint: str | None) -> list[DecisionRecord]:
    """The decision records of `pairs`, with random decision ids (`_random_ids`) put in the answers first."""
    return [DecisionRecord.from_answer(answer, request_id=request_id, caller=caller,
                                       run_id=loaded.run_id, policy_version=loaded.bundle.policy_config.version,
                                       features=features, rules_evaluated=list(RULE_IDS), source="api",
                                       idempotency_key=key, request_fingerprint=fingerprint, tenant=tenant,
                                       profile=loaded.bundle.params["rules"]["profile"])
            for answer, features in _random_ids(pairs)]


def _random_ids(pairs: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """The answers with random decision ids (uuid4). The scorer's ids are derived from the account, as-of and
    model version (the batch's reruns need them identical), so anyone who knows those could compute one."""
    for answer, _ in pairs:
        answer["decision_id"] = str(uuid.uuid4())
    return pairs


def _fingerprint(requests: list[ScoreRequest]) -> str:
    """The digest of what was asked, to refuse an Idempotency-Key reused for a different request."""
    canonical = json.dumps([r.model_dump(mode="json") for r in requests], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide(loaded: LoadedModel, requests: list[ScoreRequest], caller: str, tenant: str, key: str | None,
           decisions: DecisionLog, scorer: GroupScorer, metrics: Metrics) -> list[dict]:
    """Score and record with concurrent requests (`GroupScorer`: one decision and one committed transaction
    for the group), then answer: a replayed Idempotency-Key returns the recorded answers unchanged, the same
    key with another request is a 422."""
    fingerprint = _fingerprint(requests) if key else None
    request_id = current_request_id() or ""  # read here: the group may be run on another request's thread
    try:
        if key and (replay := decisions.find_idempotent(caller, key, fingerprint)) is not None:
            return replay
        pairs = scorer.score(loaded.bundle, [r.model_dump() for r in requests], tenant,  # R-CONTESTED by tenant
                             lambda pairs: _records(pairs, loaded, request_id, caller, tenant, key, fingerprint))
    except IdempotencyConflict as race:
        return race.answers
    except IdempotencyMismatch as reuse:
        raise HTTPException(status_code=422, detail=str(reuse)) from None
    except DecisionLogUnavailable:
        metrics.decision_log_errors_total.inc()
        log.error("decision log unavailable: answering 503")
        raise HTTPException(status_code=503, detail="the decision log cannot be written; no decision is "
                                                    "given without a record") from None
    for answer, _ in pairs:
        metrics.record_decision(answer["action"]["channel"], answer["tier"],
                                [b["rule"] for b in answer["blocked"]])
    return [answer for answer, _ in pairs]


@router.post("/v1/score", response_model=Answer, summary="Score one overdue account",
             responses=problems(*BODY_PROBLEMS))
def score(body: ScoreRequest, caller: Caller, loaded: Loaded, request: Request, decisions: Decisions,
          scorer: Scorer, metrics: MetricsDep, idempotency_key: IdemKey = None) -> dict:
    return decide(loaded, [body], caller, request.state.tenant, idempotency_key, decisions, scorer, metrics)[0]


@router.post("/v1/score/batch", response_model=BatchAnswer, summary="Score several accounts",
             responses=problems(*BODY_PROBLEMS))
def score_batch(body: BatchRequest, caller: Caller, loaded: Loaded, request: Request, decisions: Decisions,
                scorer: Scorer, metrics: MetricsDep, idempotency_key: IdemKey = None) -> dict:
    return {"answers": decide(loaded, body.requests, caller, request.state.tenant, idempotency_key, decisions,
                              scorer, metrics)}
