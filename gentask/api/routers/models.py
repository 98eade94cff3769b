"""The model catalog: which provider and model does which task type, with which parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gentask.api.deps import CallerDep, SettingsDep
from gentask.api.routers.tasks import _errors
from gentask.api.schemas import Envelope, ModelList
from gentask.api.views import api_param, api_words
from gentask.domain import catalog

router = APIRouter(prefix="/api/v1/ai", tags=["models"])


@router.get("/models", response_model=Envelope[ModelList], responses=_errors(401, 422, 429),
            summary="The model catalog")
async def list_models(
    caller: CallerDep, settings: SettingsDep,
    type: Annotated[Literal["image", "video", "text"] | None, Query(description="only this task type")] = None,
    provider: Annotated[str | None, Query(max_length=63, description="only this provider")] = None,
    include_retired: Annotated[bool, Query(description="list retired models too")] = True,
) -> dict:
    enabled = set(settings.providers)
    models = [{
        "provider": m.provider, "model": m.model, "type": m.type.value,
        "parameters": {api_param(name): api_words(rule.accepted) for name, rule in m.params.items()},
        "defaults": {api_param(name): value for name, value in m.defaults.items()},
        "enabled": m.provider in enabled, "retired": m.retired, "successor": m.successor, "note": m.note,
    } for m in catalog.MODELS
        if (type is None or m.type.value == type) and (provider is None or m.provider == provider)
        and (include_retired or not m.retired)]
    return {"success": True, "data": {"models": models}, "message": "ok"}
