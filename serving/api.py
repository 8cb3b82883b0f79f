"""The real-time scoring API: FastAPI over one bundle loaded at start-up (no postponed annotations here:
FastAPI resolves the `Annotated[..., Depends(...)]` of routes defined inside `create_app`).

Routes: POST /v1/score, POST /v1/score/batch, GET /v1/model, GET /healthz, GET /readyz. Scoring routes are
plain `def` (CPU-bound, run in the threadpool). A request the contract rejects is a 422 naming the table,
field and rows; a server without a model answers 503 and /readyz says so.
"""


import logging
import threading
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from models.contract import ContractError
from models.registry import LoadedModel, load_bundle
from models.scoring import score_requests
from serving.schemas import Answer, BatchAnswer, BatchRequest, ModelInfo, ScoreRequest

log = logging.getLogger("cureflow.api")


class ModelHolder:
    """The loaded model, swapped atomically under a lock (reload comes with the service issue)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        try:
            loaded = load_bundle(self.uri)
        except Exception as err:  # the process stays up, not ready, and says why
            self.error = f"{type(err).__name__}: {err}"
            log.error("model load failed", extra={"model_uri": self.uri, "error": self.error})
            return
        with self._lock:
            self.loaded, self.error = loaded, None
        log.info("model loaded", extra={"model_uri": self.uri, "model_version": loaded.version})


def create_app(model_uri: str) -> FastAPI:
    """The app, loading `model_uri` once at start-up."""
    holder = ModelHolder(model_uri)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.load()
        yield

    app = FastAPI(title="cureflow", version="0.1.0", lifespan=lifespan,
                  description="Delinquency risk and next-best-action for collections (see CONTRACT.md).")
    app.state.holder = holder

    def model() -> LoadedModel:
        if holder.loaded is None:
            raise HTTPException(status_code=503, detail=f"no model loaded: {holder.error or 'loading'}")
        return holder.loaded

    @app.exception_handler(ContractError)
    async def contract_error(request: Request, err: ContractError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [{
            "loc": ["body", err.table, err.column], "msg": str(err), "type": "contract_error", "rows": err.rows}]})

    def _score(loaded: LoadedModel, requests: list[ScoreRequest]) -> list[dict[str, Any]]:
        payload = [r.model_dump(mode="json") for r in requests]
        return score_requests(loaded.bundle, payload)

    @app.post("/v1/score", response_model=Answer, summary="Score one overdue account")
    def score(body: ScoreRequest, loaded: Annotated[LoadedModel, Depends(model)]) -> dict[str, Any]:
        return _score(loaded, [body])[0]

    @app.post("/v1/score/batch", response_model=BatchAnswer, summary="Score several accounts")
    def score_batch(body: BatchRequest, loaded: Annotated[LoadedModel, Depends(model)]) -> dict[str, Any]:
        return {"answers": _score(loaded, body.requests)}

    @app.get("/v1/model", response_model=ModelInfo)
    def model_info(loaded: Annotated[LoadedModel, Depends(model)]) -> dict[str, Any]:
        bundle = loaded.bundle
        return {"model_uri": loaded.uri, "model_version": loaded.version, "run_id": loaded.run_id,
                "policy_version": bundle.policy_config.version, "feature_names": bundle.feature_names}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if holder.loaded is None:
            return JSONResponse(status_code=503, content={"ready": False, "reason": holder.error or "loading"})
        return JSONResponse(content={"ready": True, "model_version": holder.loaded.version})

    return app
