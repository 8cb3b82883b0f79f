"""The dependencies routes declare: who is calling (one per role), the loaded model, and the service's parts
that `create_app` put on `app.state` (the model holder, the decision log, the grouped scorer, the metrics)."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security

from models.decision_log import DecisionLog
from models.registry import LoadedModel
from models.scoring import GroupScorer
from serving.api.holder import ModelHolder
from serving.observability import Metrics
from serving.security import API_KEY_SCHEME, CallerDependency


@dataclass(frozen=True)
class Callers:
    """The caller dependency of each role, built by `create_app` from the key rings and settings."""

    scoring: CallerDependency
    reader: CallerDependency
    admin: CallerDependency


async def scoring_caller(request: Request, key: Annotated[str | None, Security(API_KEY_SCHEME)]) -> str:
    """A scoring or admin key (`security.scoring_caller`): the caller id; 403 for an auditor key, else 401."""
    return await request.app.state.callers.scoring(request, key)


async def reader_caller(request: Request, key: Annotated[str | None, Security(API_KEY_SCHEME)]) -> str:
    """Any key (`security.reader_caller`): the caller id, its role and tenant on the request; else 401."""
    return await request.app.state.callers.reader(request, key)


async def admin_caller(request: Request, key: Annotated[str | None, Security(API_KEY_SCHEME)]) -> str:
    """An admin key (`security.admin_caller`): the caller id; 403 for a scoring or auditor key, else 401."""
    return await request.app.state.callers.admin(request, key)


async def holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def decision_log(request: Request) -> DecisionLog:
    return request.app.state.decisions


async def scorer(request: Request) -> GroupScorer:
    """The grouped scorer (concurrent score requests decided in one vectorised call)."""
    return request.app.state.scorer


async def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def loaded_model(request: Request) -> LoadedModel:
    """The model serving now; 503 while none is loaded (and why)."""
    current = request.app.state.holder
    loaded = current.loaded
    if loaded is None:
        raise HTTPException(status_code=503, detail=f"no model loaded: {current.error or 'loading'}")
    return loaded


Caller = Annotated[str, Depends(scoring_caller)]
Reader = Annotated[str, Depends(reader_caller)]
Admin = Annotated[str, Depends(admin_caller)]
Loaded = Annotated[LoadedModel, Depends(loaded_model)]
Holder = Annotated[ModelHolder, Depends(holder)]
Decisions = Annotated[DecisionLog, Depends(decision_log)]
Scorer = Annotated[GroupScorer, Depends(scorer)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]
