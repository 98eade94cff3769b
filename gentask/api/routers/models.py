"""The model catalog: which provider and model does which task type, with which parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gentask.api.deps import CallerDep, SettingsDep
from gentask.api.routers.tasks import error_responses
from gentask.api.schemas import Envelope, ModelList, ModelView
from gentask.api.translate import api_words
from gentask.domain import catalog
from gentask.domain.names import to_snake

router = APIRouter(prefix="/api/v1/ai", tags=["models"])


@router.get("/models", response_model=Envelope[ModelList], responses=error_responses(401, 422, 429),
            summary="The model catalog")
async def list_models(
    caller: CallerDep, settings: SettingsDep,
    type: Annotated[Literal["image", "video", "text"] | None, Query(description="only this task type")] = None,
    provider: Annotated[str | None, Query(max_length=63, description="only this provider")] = None,
    include_retired: Annotated[bool, Query(description="list retired models too")] = True,
) -> Envelope[ModelList]:
    """The catalog's models, with the parameters each accepts, by the API's names."""
    enabled = set(settings.providers)
    prices = settings.price_table()
    models = [ModelView(
        provider=m.provider, model=m.model, type=m.type.value,
        parameters={to_snake(name): api_words(rule.accepted) for name, rule in m.params.items()},
        defaults={to_snake(name): value for name, value in m.defaults.items()},
        enabled=m.provider in enabled, retired=m.retired, successor=m.successor, note=m.note,
        price=price.describe() if (price := prices.get(m.provider, m.model)) is not None else None,
    ) for m in catalog.MODELS
        if (type is None or m.type.value == type) and (provider is None or m.provider == provider)
        and (include_retired or not m.retired)]
    return Envelope[ModelList](success=True, data=ModelList(models=models), message="ok")
