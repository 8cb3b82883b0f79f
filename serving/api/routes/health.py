"""Health: GET /healthz (the process is up), /readyz (a model and a decision log answer), /metrics."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving.api.deps import Decisions, Holder, MetricsDep
from serving.api.errors import problems
from serving.observability import render

router = APIRouter()


@router.get("/healthz", summary="The process is up (does not touch the database)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=problems(503),
            summary="Ready: a model is loaded and the decision log answers (else 503 with the reasons)")
def readyz(holder: Holder, decisions: Decisions) -> JSONResponse:
    problems = []
    if holder.loaded is None:
        problems.append(f"no model loaded ({holder.error or 'loading'})")
    if not decisions.ping():
        problems.append("decision log unreachable")
    if problems:
        return JSONResponse(status_code=503, content={"ready": False, "reasons": problems})
    return JSONResponse(content={"ready": True, "model_version": holder.loaded.version})


@router.get("/metrics", summary="Prometheus metrics: requests, latency, decisions, rule blocks, load shed")
def prometheus(metrics: MetricsDep) -> Response:
    body, content_type = render(metrics)
    return Response(content=body, media_type=content_type)
