"""The "volcengine" provider: Ark (doubao-*) and Visual/Jimeng (jimeng_*) behind one name.

The old server called both "volcengine"; the catalog keeps that name and records in
`ModelSpec.api` which API serves a model ("ark" or "visual"), so a task never has to know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gentask.providers.ark import Ark
from gentask.providers.base import GenerationRequest, GenerationResult, JobStatus, Provider
from gentask.providers.errors import ProviderError
from gentask.providers.visual import Visual

if TYPE_CHECKING:
    from gentask.config import Settings


class VolcengineProvider(Provider):
    """The "volcengine" provider: routes each model to Ark or Visual by the catalog's `api`."""

    name = "volcengine"

    def __init__(self, *, ark: Ark, visual: Visual) -> None:
        self.ark = ark
        self.visual = visual

    @classmethod
    def from_settings(cls, settings: Settings) -> VolcengineProvider:
        """Both API clients from ARK_API_KEY, the VOLCENGINE_* keys, their base URLs and AI_TIMEOUT."""
        return cls(
            ark=Ark(provider=cls.name, api_key=settings.ark_api_key, base_url=settings.ark_base_url,
                    timeout=settings.ai_timeout),
            visual=Visual(provider=cls.name, access_key=settings.volcengine_access_key,
                          secret_key=settings.volcengine_secret_key, base_url=settings.visual_base_url,
                          timeout=settings.ai_timeout))

    def _api(self, request: GenerationRequest) -> Ark | Visual:
        return self.visual if request.model.api == "visual" else self.ark

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """An image (Ark or Visual) or a text (Ark only) in one call."""
        api = self._api(request)
        if request.type.value == "image":
            return await api.image(request)
        if request.type.value == "text" and isinstance(api, Ark):
            return await api.text(request)
        raise self.unsupported(request, "generate")

    async def submit(self, request: GenerationRequest) -> str:
        """Start a video job on the model's API; returns that API's task id."""
        return await self._api(request).submit_video(request)

    async def poll(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """The video job's state from the API that started it."""
        return await self._api(request).poll_video(request, task_id)

    async def cancel(self, request: GenerationRequest, task_id: str) -> None:
        """Cancel an Ark job (a gone one is fine); Jimeng jobs are left to run out, see below."""
        api = self._api(request)
        if isinstance(api, Visual):
            # CVCancelTask (Version 2024-06-06) exists, but whether it stops CVSync2Async jobs is
            # unconfirmed (reference §3.1); an unwanted Jimeng job runs out and is forgotten in 12 h.
            return
        try:
            await api.cancel_video(request, task_id)
        except ProviderError as error:
            if error.status_code != 404:
                raise

    async def aclose(self) -> None:
        """Close the connections of both APIs."""
        await self.ark.aclose()
        await self.visual.aclose()
