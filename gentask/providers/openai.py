"""OpenAI over HTTP: images/generations, chat/completions, videos (Sora).

Wire format: shared/reference/provider-apis.md §4. `gpt-image-*` models always answer base64 and
refuse a `response_format` field, so it is sent to DALL·E models only. Sora jobs are created as
multipart/form-data with `seconds` as a string; a finished video is fetched from
`/videos/{id}/content` and returned as bytes.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from gentask.providers.base import (
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    Media,
    Provider,
    expires_in,
    int_usage,
    sniff_mime,
)
from gentask.providers.errors import AuthenticationError, ProviderError, openai_error
from gentask.providers.http import VendorHTTP, parse_json

if TYPE_CHECKING:
    from gentask.config import Settings

DALLE_URL_LIFETIME = 3600
VIDEO_SIZES = {"16:9": "1280x720", "9:16": "720x1280"}
RUNNING = {"queued": JobState.QUEUED, "in_progress": JobState.RUNNING}


class OpenAIProvider(Provider):
    """The "openai" provider: gpt-image/DALL·E images, chat texts and Sora video jobs."""

    name = "openai"

    def __init__(self, *, api_key: SecretStr | None, base_url: str, timeout: float) -> None:
        self._key = api_key
        self.http = VendorHTTP(provider=self.name, base_url=base_url, timeout=timeout,
                               secrets=[api_key.get_secret_value() if api_key else ""], parse_error=openai_error)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        """The client from OPENAI_API_KEY, OPENAI_BASE_URL and AI_TIMEOUT."""
        return cls(api_key=settings.openai_api_key, base_url=settings.openai_base_url, timeout=settings.ai_timeout)

    def _auth(self, model: str) -> dict[str, str]:
        if self._key is None or not self._key.get_secret_value():
            raise AuthenticationError("OPENAI_API_KEY is not set", provider=self.name, model=model)
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    async def _send(self, method: str, path: str, model: str, **kw: Any) -> httpx.Response:
        headers = {**self._auth(model), **kw.pop("headers", {})}
        return await self.http.send(method, path, model=model, headers=headers, **kw)

    def _result(self, request: GenerationRequest, response: httpx.Response, **kw: Any) -> GenerationResult:
        return GenerationResult(provider=self.name, model=request.model.model,
                                request_id=response.headers.get("x-request-id"), **kw)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """An image (images/generations) or a text (chat/completions) in one call."""
        if request.type.value == "image":
            return await self._image(request)
        if request.type.value == "text":
            return await self._text(request)
        raise self.unsupported(request, "generate")

    async def _image(self, request: GenerationRequest) -> GenerationResult:
        model = request.model.model
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": request.param("n"),
                                "size": request.param("size")}
        if not request.model.options.get("inline_only"):
            body["response_format"] = request.param("response_format")
        response = await self._send("POST", "images/generations", model, json=body)
        data = parse_json(response)
        images = []
        for item in data.get("data") or []:
            if item.get("b64_json"):
                raw = base64.b64decode(item["b64_json"])
                images.append(Media(sniff_mime(raw, "image/png"), data=raw))
            elif item.get("url"):
                images.append(Media("image/png", url=item["url"], url_expires_at=expires_in(DALLE_URL_LIFETIME)))
        if not images:
            raise ProviderError("OpenAI answered without an image", provider=self.name, model=model,
                                request_id=response.headers.get("x-request-id"))
        return self._result(request, response, images=images, usage=int_usage(data.get("usage")))

    async def _text(self, request: GenerationRequest) -> GenerationResult:
        model = request.model.model
        messages = request.chat_messages()
        max_tokens_field = request.model.options.get("max_tokens_field", "max_tokens")
        body: dict[str, Any] = {"model": model, "messages": messages, max_tokens_field: request.param("max_tokens")}
        if "temperature" in request.model.params:
            body["temperature"] = request.param("temperature")
        response = await self._send("POST", "chat/completions", model, json=body)
        data = parse_json(response)
        choice = (data.get("choices") or [{}])[0]
        return self._result(request, response, text=(choice.get("message") or {}).get("content") or "",
                            finish_reason=choice.get("finish_reason"), usage=int_usage(data.get("usage")))

    async def submit(self, request: GenerationRequest) -> str:
        """Create a Sora video (multipart form, `seconds` as a string); returns the video id."""
        model = request.model.model
        fields = {"prompt": request.prompt, "model": model, "seconds": str(request.param("duration")),
                  "size": VIDEO_SIZES.get(request.param("aspect_ratio"), "720x1280")}
        response = await self._send("POST", "videos", model, files={k: (None, v) for k, v in fields.items()})
        video_id = parse_json(response).get("id")
        if not video_id:
            raise ProviderError("OpenAI created a video without an id", provider=self.name, model=model,
                                request_id=response.headers.get("x-request-id"))
        return str(video_id)

    async def poll(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """The video's state; once completed its content is downloaded, as OpenAI serves no URL."""
        model = request.model.model
        response = await self._send("GET", f"videos/{task_id}", model)
        data = parse_json(response)
        status = str(data.get("status") or "")
        if status in RUNNING:
            return JobStatus(RUNNING[status], progress=data.get("progress"))
        if status == "completed":
            content = await self._send("GET", f"videos/{task_id}/content", model, params={"variant": "video"},
                                       headers={"Accept": "application/binary"})
            video = Media(sniff_mime(content.content, "video/mp4"), data=content.content)
            return JobStatus(JobState.SUCCEEDED, 100, self._result(request, response, video=video,
                                                                   provider_task_id=task_id))
        ended = {"message": f"the video ended {status or 'without a status'}"}
        error = self.http.error(None, data.get("error") or ended, response.headers, model)
        return JobStatus(JobState.FAILED, error=error)

    async def cancel(self, request: GenerationRequest, task_id: str) -> None:
        """Delete the video job; one that is already gone (404) is not an error."""
        try:
            await self._send("DELETE", f"videos/{task_id}", request.model.model)
        except ProviderError as error:
            if error.status_code != 404:
                raise

    async def aclose(self) -> None:
        """Close the HTTP connections to OpenAI."""
        await self.http.aclose()
