"""One APIRouter per resource, in the order the OpenAPI document lists their routes."""

from serving.api.routes import admin, decisions, health, score

ROUTERS = (score.router, decisions.router, admin.router, health.router)
