"""Volcengine Ark over HTTP: images/generations, chat/completions, contents/generations/tasks.

Wire format: shared/reference/provider-apis.md §2. Auth is `Authorization: Bearer ARK_API_KEY`
(the image and video-task methods accept nothing else). Unset options are left out of the body.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import SecretStr

from gentask.providers.base import (
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    Media,
    expires_in,
    int_usage,
    sniff_mime,
)
from gentask.providers.errors import AuthenticationError, OverloadedError, ProviderError, ark_error
from gentask.providers.http import VendorHTTP, parse_json

URL_LIFETIME = 24 * 3600      # image and video URLs (X-Tos-Expires=86400)
RUNNING = {"queued": JobState.QUEUED, "running": JobState.RUNNING, "pending": JobState.QUEUED,
           "processing": JobState.RUNNING}


class Ark:
    """The Ark API client of the volcengine provider: doubao-* images, texts and video jobs."""

    def __init__(self, *, provider: str, api_key: SecretStr | None, base_url: str, timeout: float) -> None:
        self.provider = provider
        self._key = api_key
        secret = api_key.get_secret_value() if api_key else ""
        self.http = VendorHTTP(provider=provider, base_url=base_url, timeout=timeout, secrets=[secret],
                               parse_error=ark_error)

    def _auth(self, model: str) -> dict[str, str]:
        if self._key is None or not self._key.get_secret_value():
            raise AuthenticationError("ARK_API_KEY is not set", provider=self.provider, model=model)
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    async def _post(self, path: str, body: dict[str, Any], model: str) -> tuple[dict[str, Any], str | None]:
        response = await self.http.send("POST", path, model=model, json=body, headers=self._auth(model))
        return parse_json(response), response.headers.get("x-request-id")

    def _result(self, request: GenerationRequest, request_id: str | None, **kw: Any) -> GenerationResult:
        return GenerationResult(provider=self.provider, model=request.model.model, request_id=request_id, **kw)

    async def image(self, request: GenerationRequest) -> GenerationResult:
        """One images/generations call; seedream-4 models get `n` images as a sequential generation."""
        model = request.model.model
        n = request.param("n") or 1
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "size": request.param("size"),
                                "response_format": request.param("response_format"), "seed": request.param("seed")}
        if model.startswith("doubao-seedream-4"):
            body["sequential_image_generation"] = "auto" if n > 1 else "disabled"
            if n > 1:
                body["sequential_image_generation_options"] = {"max_images": n}
        data, request_id = await self._post("images/generations", body, model)
        images = []
        for item in data.get("data") or []:
            if item.get("b64_json"):
                raw = base64.b64decode(item["b64_json"])
                images.append(Media(sniff_mime(raw, "image/jpeg"), data=raw))
            elif item.get("url"):
                images.append(Media("image/jpeg", url=item["url"], url_expires_at=expires_in(URL_LIFETIME)))
            elif item.get("error"):
                raise self.http.error(None, item, {}, model)
        if not images:
            raise ProviderError("Ark answered without an image", provider=self.provider, model=model,
                                request_id=request_id)
        return self._result(request, request_id, images=images, usage=int_usage(data.get("usage")))

    async def text(self, request: GenerationRequest) -> GenerationResult:
        """One chat/completions call; the answer's first choice becomes the text."""
        model = request.model.model
        messages = request.chat_messages()
        body = {"model": model, "messages": messages, "max_tokens": request.param("max_tokens"),
                "temperature": request.param("temperature")}
        data, request_id = await self._post("chat/completions", body, model)
        choice = (data.get("choices") or [{}])[0]
        return self._result(request, request_id, text=(choice.get("message") or {}).get("content") or "",
                            finish_reason=choice.get("finish_reason"), usage=int_usage(data.get("usage")))

    async def submit_video(self, request: GenerationRequest) -> str:
        """Create a contents/generations task; returns Ark's task id for poll_video."""
        model = request.model.model
        body = {"model": model, "content": [{"type": "text", "text": request.prompt}],
                "ratio": request.param("aspect_ratio"), "duration": request.param("duration"),
                "resolution": request.param("resolution"), "seed": request.param("seed")}
        data, request_id = await self._post("contents/generations/tasks", body, model)
        if not data.get("id"):
            raise ProviderError("Ark created a task without an id", provider=self.provider, model=model,
                                request_id=request_id)
        return str(data["id"])

    async def poll_video(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """The task's state; a task Ark no longer knows (404) is a failed job, not a failed poll."""
        model = request.model.model
        try:
            response = await self.http.send("GET", f"contents/generations/tasks/{task_id}", model=model,
                                            headers=self._auth(model))
        except ProviderError as exc:
            if exc.status_code != 404:
                raise
            return JobStatus(JobState.FAILED, error=ProviderError(
                f"Ark does not know task {task_id} (deleted or expired)", provider=self.provider, model=model,
                code=exc.code, status_code=404, request_id=exc.request_id))
        data, request_id = parse_json(response), response.headers.get("x-request-id")
        status = str(data.get("status") or "")
        if status in RUNNING:
            return JobStatus(RUNNING[status])
        if status == "succeeded":
            url = (data.get("content") or {}).get("video_url")
            video = Media("video/mp4", url=url, url_expires_at=expires_in(URL_LIFETIME))
            return JobStatus(JobState.SUCCEEDED, 100, self._result(request, request_id, video=video,
                                                                   usage=int_usage(data.get("usage")),
                                                                   provider_task_id=task_id))
        if status == "failed":
            error = self.http.error(None, data.get("error") or {}, {}, model)
        elif status == "expired":
            error = OverloadedError("the vendor job expired before it ran")
        else:
            error = ProviderError(f"the vendor job ended {status or 'without a status'}")
        error.provider, error.model, error.request_id = self.provider, model, error.request_id or request_id
        error.usage = int_usage(data.get("usage"))      # a job that ran may be billed for what it used
        return JobStatus(JobState.FAILED, error=error)

    async def cancel_video(self, request: GenerationRequest, task_id: str) -> None:
        """Stop the video task: DELETE contents/generations/tasks/{id}; errors go to the caller."""
        model = request.model.model
        await self.http.send("DELETE", f"contents/generations/tasks/{task_id}", model=model, headers=self._auth(model))

    async def aclose(self) -> None:
        """Close the HTTP connections to Ark."""
        await self.http.aclose()
