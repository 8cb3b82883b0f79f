"""The real-time scoring API: FastAPI over one bundle, with keys, a decision log, metrics and load shedding.

Routes: POST /v1/score, POST /v1/score/batch, GET /v1/decisions/{id}, GET /v1/model, POST /v1/admin/reload,
GET /healthz, /readyz, /metrics. Decision ids are random (uuid4): nothing about a request lets anyone compute
one; a scoring key reads only its tenant's decisions, auditor and admin keys read all, and every read is
logged with the caller and its role. Every decision is appended to the decision log before the answer leaves;
when the log cannot be written the answer is 503, never a success without a record. Scoring routes are plain
`def` (CPU-bound, run in the threadpool).

The package, laid out as the full-stack FastAPI template lays out its backend:

- `app`: `create_app`, the factory that only wires: settings, the model holder, the decision log, the key
  rings, middleware, exception handlers and the routers;
- `deps`: the dependencies routes declare (the caller of each role, the loaded model, the decision log, ...);
- `routes/`: one `APIRouter` per resource: `score`, `decisions`, `admin` (the model and its reload), `health`
  (liveness, readiness, metrics);
- `errors`: the error body, the errors each route documents, and the exception handlers;
- `holder`: the serving model, its reload, and the background tasks that retry a failed load and watch the
  registry alias.

No postponed annotations in the route and dependency modules: FastAPI reads their `Annotated[..., Depends(...)]`.
"""

from serving.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
