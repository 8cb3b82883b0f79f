"""The model: GET /v1/model (what is serving) and POST /v1/admin/reload (load the model URI again and swap)."""

from typing import Any

from fastapi import APIRouter, HTTPException

from models.schemas import ModelInfo
from serving.api.deps import Admin, Caller, Holder, Loaded
from serving.api.errors import problems

router = APIRouter()


@router.get("/v1/model", response_model=ModelInfo, responses=problems(401, 403, 431, 503),
            summary="The model serving: URI, registered version, run, policy version, features")
def model_info(caller: Caller, loaded: Loaded, holder: Holder) -> dict[str, Any]:
    bundle = loaded.bundle
    return {"model_uri": loaded.uri, "model_version": loaded.version, "run_id": loaded.run_id,
            "policy_version": bundle.policy_config.version, "feature_names": bundle.feature_names,
            "alias_checked_at": holder.alias_checked_at}


@router.post("/v1/admin/reload", summary="Load the model URI again (a new @champion) and swap atomically",
             responses=problems(401, 403, 409, 431))
def reload(caller: Admin, holder: Holder) -> dict[str, Any]:
    previous = holder.loaded.version if holder.loaded else None
    try:
        loaded = holder.load()
    except Exception as err:
        raise HTTPException(status_code=409, detail=f"reload failed ({type(err).__name__}); still serving "
                                                    f"{previous}") from None
    return {"model_version": loaded.version, "previous_version": previous, "run_id": loaded.run_id}
