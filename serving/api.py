"""The real-time scoring API: FastAPI over one bundle, with keys, a decision log, metrics and load shedding.

Routes: POST /v1/score, POST /v1/score/batch, GET /v1/decisions/{id}, GET /v1/model, POST /v1/admin/reload,
GET /healthz, /readyz, /metrics. Decision ids are random (uuid4): nothing about a request lets anyone compute
one; a scoring key reads only its tenant's decisions, auditor and admin keys read all, and every read is
logged with the caller and its role. Every decision is appended to the decision log before the answer leaves;
when the log cannot be written the answer is 503, never a success without a record. Scoring routes are plain
`def` (CPU-bound, run in the threadpool). No postponed annotations in this module: FastAPI resolves the
`Annotated[..., Depends(...)]` of routes defined inside `create_app`.
"""

import asyncio
import contextlib
import gc
import hashlib
import itertools
import json
import logging
import math
import threading
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from models.contract import ContractError
from models.registry import LoadedModel, load_bundle, registered_version, registry_client
from models.rules import RULE_IDS
from models.schemas import (
    Answer,
    BatchAnswer,
    BatchRequest,
    Contest,
    Event,
    ModelInfo,
    OutcomeReport,
    Override,
    ScoreRequest,
)
from models.scoring import example_request, score_requests_with_features
from serving.decisions import (
    DecisionLog,
    DecisionLogUnavailable,
    DecisionRecord,
    GroupCommit,
    IdempotencyConflict,
    IdempotencyMismatch,
)
from serving.limits import BodyGuard, LoadShedder
from serving.observability import Metrics, RequestObserver, configure_logging, current_request_id, make_metrics, render
from serving.security import (
    SCORING,
    KeyRing,
    TenantRings,
    admin_caller,
    reader_caller,
    require_keys,
    scoring_caller,
)
from serving.settings import Settings, load_settings

log = logging.getLogger("cureflow.api")


class ModelHolder:
    """The serving model. A reload loads the new one beside the old, checks it with a smoke prediction and
    swaps it in atomically; a failed load or check keeps the old model serving."""

    def __init__(self, uri: str, metrics: Metrics):
        self.uri = uri
        self.metrics = metrics
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self.alias_checked_at: datetime | None = None  # the alias watcher's last answer from the registry
        self._lock = threading.Lock()

    def load(self) -> LoadedModel:
        """Load, smoke-test and swap; raises (and keeps the current model) when any step fails."""
        try:
            candidate = load_bundle(self.uri)
            smoke = ScoreRequest.model_validate(example_request()).model_dump()
            score_requests_with_features(candidate.bundle, [smoke])
        except Exception as err:
            self.error = type(err).__name__
            log.error("model load failed", extra={"model_uri": self.uri, "error_type": self.error})
            raise
        with self._lock:
            self.loaded, self.error = candidate, None
        settle_heap()
        self.metrics.set_model(candidate.version, candidate.run_id)
        log.info("model loaded", extra={"model_uri": self.uri, "model_version": candidate.version})
        return candidate

    def alias_checked(self, at: datetime) -> None:
        """The registry answered the alias watcher at `at`."""
        self.alias_checked_at = at
        self.metrics.alias_checked.set(at.timestamp())

    def load_quietly(self) -> None:
        """Start-up: a failed load leaves the process up and not ready; the log says why."""
        with contextlib.suppress(Exception):
            self.load()


def _finite(value: Any) -> Any:
    """The value with every NaN or infinity replaced by its JSON-ish name, so the standard encoder takes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def settle_heap() -> None:
    """Collect once, then move every live object (the model, the libraries) out of the collector's reach.

    A full collection walks the whole heap: about 375,000 objects and 195 ms once the model and its
    libraries are loaded, a stall for every request in flight. After `gc.freeze()` a full collection
    walks only what was allocated since (the objects of requests), so it costs well under a millisecond.
    Frozen objects are still freed by reference counting; `unfreeze` first lets a replaced model's cycles
    be collected at a reload.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _records(pairs, loaded: LoadedModel, caller: str, tenant: str, key: str | None, fingerprint: str | None
             ) -> list[DecisionRecord]:
    return [DecisionRecord.from_answer(answer, request_id=current_request_id() or "", caller=caller,
                                       run_id=loaded.run_id, policy_version=loaded.bundle.policy_config.version,
                                       features=features, rules_evaluated=list(RULE_IDS), source="api",
                                       idempotency_key=key, request_fingerprint=fingerprint, tenant=tenant,
                                       profile=loaded.bundle.params["rules"]["profile"])
            for answer, features in pairs]


def _loggable_id(text: str) -> str | None:
    """A decision id for the log when it has the shape of one (a UUID), else None: the path is the caller's
    text and may hold anything, personal data included."""
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


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


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; loads the model once at start-up. Refuses to start without API keys unless insecure."""
    settings = settings or load_settings()
    require_keys(settings)
    configure_logging(settings.log_level)
    metrics = make_metrics()
    holder = ModelHolder(settings.model_uri, metrics)
    decisions = DecisionLog(settings.database_url, sync=settings.decision_log_sync,
                            statement_timeout_s=settings.decision_log_timeout_s)
    writer = GroupCommit(decisions)
    crm, admins = TenantRings(settings.api_key_values()), KeyRing(settings.admin_key_values())
    auditors = KeyRing(settings.auditor_key_values())
    scoring = scoring_caller(crm, admins, settings.insecure, ring_auditor=auditors)
    admin = admin_caller(admins, crm, settings.insecure, ring_auditor=auditors)
    reader = reader_caller(crm, admins, auditors, settings.insecure)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(holder.load_quietly)
        retry = _background(_retry_until_loaded(holder), "load retry")
        watcher = _background(_watch_alias(holder, settings.reload_interval_s), "alias watcher")
        yield
        retry.cancel()
        watcher.cancel()
        writer.close()
        decisions.close()

    # Swagger UI and ReDoc served from the package's own files (fastapi-offline), not a CDN: /docs works on a
    # locked-down network with no internet
    app = FastAPIOffline(title="cureflow", version="0.2.0", lifespan=lifespan,
                  description="Delinquency risk and next-best-action for collections (see CONTRACT.md).")
    app.state.holder, app.state.decisions, app.state.metrics = holder, decisions, metrics
    # the last added runs first: observer, then the body guard, then the shedder (a slow body takes no slot)
    app.add_middleware(LoadShedder, max_concurrency=settings.max_concurrency, on_count=metrics.in_flight.set,
                       on_shed=lambda reason: metrics.shed_total.labels(reason=reason).inc())
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestObserver, metrics=metrics, routes=app.router.routes)

    def model() -> LoadedModel:
        loaded = holder.loaded
        if loaded is None:
            raise HTTPException(status_code=503, detail=f"no model loaded: {holder.error or 'loading'}")
        return loaded

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, except that a non-finite input is echoed as text: `NaN` in a body would otherwise
        make the error itself unserialisable (a 500)."""
        return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(err.errors()))})

    @app.exception_handler(ContractError)
    async def contract_error(request: Request, err: ContractError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [{
            "loc": ["body", err.table, err.column], "msg": str(err), "type": "contract_error", "rows": err.rows}]})

    def decide(loaded: LoadedModel, requests: list[ScoreRequest], caller: str, tenant: str, key: str | None
               ) -> list[dict]:
        """Score, record, then answer: a replayed Idempotency-Key returns the recorded answers unchanged, the
        same key with another request is a 422."""
        fingerprint = _fingerprint(requests) if key else None
        try:
            if key and (replay := decisions.find_idempotent(caller, key, fingerprint)) is not None:
                return replay
            contested = decisions.contested([r.account.account_id for r in requests], tenant)  # R-CONTESTED
            pairs = _random_ids(score_requests_with_features(loaded.bundle, [r.model_dump() for r in requests],
                                                             contested))
            writer.append(_records(pairs, loaded, caller, tenant, key, fingerprint))
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

    Caller = Annotated[str, Depends(scoring)]
    Loaded = Annotated[LoadedModel, Depends(model)]
    IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]

    @app.post("/v1/score", response_model=Answer, summary="Score one overdue account",
              responses=problems(*BODY_PROBLEMS))
    def score(body: ScoreRequest, caller: Caller, loaded: Loaded, request: Request,
              idempotency_key: IdemKey = None) -> dict:
        return decide(loaded, [body], caller, request.state.tenant, idempotency_key)[0]

    @app.post("/v1/score/batch", response_model=BatchAnswer, summary="Score several accounts",
              responses=problems(*BODY_PROBLEMS))
    def score_batch(body: BatchRequest, caller: Caller, loaded: Loaded, request: Request,
                    idempotency_key: IdemKey = None) -> dict:
        return {"answers": decide(loaded, body.requests, caller, request.state.tenant, idempotency_key)}

    @app.get("/v1/decisions/{decision_id}", summary="A recorded decision, for an audit",
             responses=problems(401, 403, 404, 431, 503))
    def get_decision(decision_id: str, caller: Annotated[str, Depends(reader)], request: Request) -> dict[str, Any]:
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
                 response: Response) -> dict[str, Any]:
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

    @app.post("/v1/decisions/{decision_id}/outcome", response_model=Event, status_code=201,
              responses=problems(*BODY_PROBLEMS, 404),
              summary="Report what happened after a decision (one attempt)")
    def outcome(decision_id: str, body: OutcomeReport, caller: Caller, request: Request, response: Response
                ) -> dict[str, Any]:
        """One attempt's outcome; the same attempt (same instant and channel) reported again is counted once."""
        report = body.model_dump(mode="json")
        return feedback(decision_id, "outcome", f"{body.at.astimezone(UTC).isoformat()}|{body.channel}", report,
                        caller, request, response)

    @app.post("/v1/decisions/{decision_id}/override", response_model=Event, status_code=201,
              responses=problems(*BODY_PROBLEMS, 404),
              summary="A person chose another action than the one recommended")
    def override(decision_id: str, body: Override, caller: Caller, request: Request, response: Response,
                 idempotency_key: IdemKey = None) -> dict[str, Any]:
        report = body.model_dump(mode="json")
        return feedback(decision_id, "override", _body_key(report, idempotency_key), report, caller, request,
                        response)

    @app.post("/v1/decisions/{decision_id}/contest", response_model=Event, status_code=201,
              responses=problems(*BODY_PROBLEMS, 404),
              summary="The customer contests the automated decision (GDPR art. 22(3))")
    def contest(decision_id: str, body: Contest, caller: Caller, request: Request, response: Response,
                idempotency_key: IdemKey = None) -> dict[str, Any]:
        report = body.model_dump(mode="json")
        return feedback(decision_id, "contest", _body_key(report, idempotency_key), report, caller, request,
                        response)

    @app.get("/v1/model", response_model=ModelInfo, responses=problems(401, 403, 431, 503),
             summary="The model serving: URI, registered version, run, policy version, features")
    def model_info(caller: Caller, loaded: Loaded) -> dict[str, Any]:
        bundle = loaded.bundle
        return {"model_uri": loaded.uri, "model_version": loaded.version, "run_id": loaded.run_id,
                "policy_version": bundle.policy_config.version, "feature_names": bundle.feature_names,
                "alias_checked_at": holder.alias_checked_at}

    @app.post("/v1/admin/reload", summary="Load the model URI again (a new @champion) and swap atomically",
              responses=problems(401, 403, 409, 431))
    def reload(caller: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        previous = holder.loaded.version if holder.loaded else None
        try:
            loaded = holder.load()
        except Exception as err:
            raise HTTPException(status_code=409, detail=f"reload failed ({type(err).__name__}); still serving "
                                                        f"{previous}") from None
        return {"model_version": loaded.version, "previous_version": previous, "run_id": loaded.run_id}

    @app.get("/healthz", summary="The process is up (does not touch the database)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses=problems(503),
             summary="Ready: a model is loaded and the decision log answers (else 503 with the reasons)")
    def readyz() -> JSONResponse:
        problems = []
        if holder.loaded is None:
            problems.append(f"no model loaded ({holder.error or 'loading'})")
        if not decisions.ping():
            problems.append("decision log unreachable")
        if problems:
            return JSONResponse(status_code=503, content={"ready": False, "reasons": problems})
        return JSONResponse(content={"ready": True, "model_version": holder.loaded.version})

    @app.get("/metrics", summary="Prometheus metrics: requests, latency, decisions, rule blocks, load shed")
    def prometheus() -> Response:
        body, content_type = render(metrics)
        return Response(content=body, media_type=content_type)

    return app


LOAD_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)  # then every minute


async def _retry_until_loaded(holder: ModelHolder, delays: tuple[float, ...] = LOAD_RETRY_S) -> None:
    """After a failed start-up load, try again (1 s, 2 s, 4 s, ... then every minute) until a model is
    loaded: a registry that was down or a file that was missing at start must not leave the process
    unready for good (its /healthz is fine, so nothing would restart it)."""
    for delay in itertools.chain(delays, itertools.repeat(delays[-1])):
        if holder.loaded is not None:
            return
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(holder.load)


def _background(coroutine, name: str) -> asyncio.Task:
    """A task of the service's own; if it ever ends on an error, the log says so (a task that dies
    silently would leave, say, the alias unwatched with nothing to show for it)."""
    task = asyncio.create_task(coroutine, name=name)

    def report(done: asyncio.Task) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("%s stopped", name, exc_info=done.exception())

    task.add_done_callback(report)
    return task


async def _watch_alias(holder: ModelHolder, interval_s: float) -> None:
    """Every `interval_s` seconds, ask the registry which version the alias names and load it when it moved
    (0 = never). The question runs in a thread: a slow or unreachable registry (MLflow's client retries for
    minutes) must not stall requests. Each answer is stamped on the holder, shown as `alias_checked_at` by
    GET /v1/model and as a metric, so a watcher that stopped hearing from the registry is visible."""
    if interval_s <= 0 or not holder.uri.startswith("models:/") or "@" not in holder.uri:
        return
    client = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            client = client or await asyncio.to_thread(registry_client)
            version = await asyncio.to_thread(registered_version, client, holder.uri)
            holder.alias_checked(datetime.now(UTC))
            if version is None:
                log.warning("alias not set in the registry; keeping the current model",
                            extra={"model_uri": holder.uri})
            elif holder.loaded is None or holder.loaded.version != version:
                log.info("model alias moved; loading", extra={"model_uri": holder.uri, "model_version": version})
                await asyncio.to_thread(holder.load)
        except Exception:
            log.warning("alias check failed; keeping the current model", exc_info=True)


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory serving.api:app_from_env` (several workers read the same settings)."""
    return create_app(load_settings())
