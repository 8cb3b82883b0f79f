"""The app factory: `create_app` only wires. Settings, the model holder, the decision log and the grouped scorer, the
key rings and the caller of each role go on `app.state` (where `deps` finds them), then the middleware, the
exception handlers and one router per resource."""

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from models.decision_log import DecisionLog
from models.scoring import GroupScorer
from serving.api.deps import Callers
from serving.api.errors import add_exception_handlers
from serving.api.holder import ModelHolder, _background, _retry_until_loaded, _watch_alias
from serving.api.routes import ROUTERS
from serving.limits import BodyGuard, LoadShedder
from serving.observability import RequestObserver, configure_logging, make_metrics
from serving.security import KeyRing, TenantRings, admin_caller, reader_caller, require_keys, scoring_caller
from serving.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; loads the model once at start-up. Refuses to start without API keys unless insecure."""
    settings = settings or load_settings()
    require_keys(settings)
    configure_logging(settings.log_level)
    metrics = make_metrics()
    holder = ModelHolder(settings.model_uri, metrics)
    decisions = DecisionLog(settings.database_url, sync=settings.decision_log_sync,
                            statement_timeout_s=settings.decision_log_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if holder.loaded is None:  # a forked worker inherits the model its master loaded (serving/prefork.py)
            await asyncio.to_thread(holder.load_quietly)
        retry = _background(_retry_until_loaded(holder), "load retry")
        watcher = _background(_watch_alias(holder, settings.reload_interval_s), "alias watcher")
        yield
        retry.cancel()
        watcher.cancel()
        decisions.close()

    # Swagger UI and ReDoc served from the package's own files (fastapi-offline), not a CDN: /docs works on a
    # locked-down network with no internet
    app = FastAPIOffline(title="cureflow", version="0.2.0", lifespan=lifespan,
                  description="Delinquency risk and next-best-action for collections (see CONTRACT.md).")
    app.state.holder, app.state.decisions, app.state.metrics = holder, decisions, metrics
    app.state.callers = callers(settings)
    # concurrent score requests: one decision, one R-CONTESTED read per tenant and one committed write per group
    app.state.scorer = GroupScorer(contested=decisions.contested, commit=decisions.append_each,
                                   on_group=metrics.score_group_accounts.observe)
    # the last added runs first: observer, then the body guard, then the shedder (a slow body takes no slot)
    app.add_middleware(LoadShedder, max_concurrency=settings.max_concurrency, on_count=metrics.in_flight.set,
                       on_shed=lambda reason: metrics.shed_total.labels(reason=reason).inc())
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestObserver, metrics=metrics, routes=observed_routes(app))
    add_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def observed_routes(app: FastAPI) -> list:
    """The routes the observer names a request by when it is answered before routing (shed, 413, 408): each
    router's own routes (an included router is one opaque entry among the app's, matching with no path), then
    the app's own (OpenAPI and the docs)."""
    return [*(route for router in ROUTERS for route in router.routes), *app.router.routes]


def callers(settings: Settings) -> Callers:
    """The caller dependency of each role from the configured keys (scoring keys by tenant, admin, auditor)."""
    crm, admins = TenantRings(settings.api_key_values()), KeyRing(settings.admin_key_values())
    auditors = KeyRing(settings.auditor_key_values())
    return Callers(scoring=scoring_caller(crm, admins, settings.insecure, ring_auditor=auditors),
                   reader=reader_caller(crm, admins, auditors, settings.insecure),
                   admin=admin_caller(admins, crm, settings.insecure, ring_auditor=auditors))


def preloaded_app() -> FastAPI:
    """The app with its model already loaded, for a master that forks its workers after (serving/prefork.py):
    they share the model instead of loading one each. A failed load leaves it to each worker's start-up."""
    app = create_app(load_settings())
    app.state.holder.load_quietly()
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory serving.api:app_from_env` (several workers read the same settings)."""
    return create_app(load_settings())
