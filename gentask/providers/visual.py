"""Volcengine Visual (Jimeng) over HTTP: CVProcess, CVSync2AsyncSubmitTask, CVSync2AsyncGetResult.

Wire format: shared/reference/provider-apis.md §3. Every request is signed with Volcengine's V4
signer from the official `volcengine` package (service cv, region cn-north-1), over the exact
body bytes we send. The SDK's VisualService itself is not used: it is a blocking, process-wide
singleton whose constructor wipes host and credentials (reference §1); its signer is the authority.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from typing import Any

from pydantic import SecretStr
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials

from gentask.providers.base import (
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    Media,
    expires_in,
    sniff_mime,
)
from gentask.providers.errors import (
    VISUAL_OK,
    AuthenticationError,
    OverloadedError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UnreachableError,
    visual_error,
)
from gentask.providers.http import VendorHTTP, parse_json

VERSION = "2022-08-31"
SERVICE, REGION = "cv", "cn-north-1"
IMAGE_URL_LIFETIME = 24 * 3600
VIDEO_URL_LIFETIME = 3600
RUNNING = {"in_queue": JobState.QUEUED, "generating": JobState.RUNNING, "processing": JobState.RUNNING}
FRAMES = {5: 121, 10: 241}      # jimeng_*_v30: frames instead of seconds
# Errors of a GetResult call that say nothing about the job itself: poll again later.
POLL_AGAIN = (RateLimitedError, OverloadedError, ProviderTimeoutError, UnreachableError, AuthenticationError)


def sign(*, host: str, path: str, action: str, body: bytes, access_key: str, secret_key: str) -> dict[str, str]:
    """The headers of a V4-signed POST {path}?Action=…&Version=…, as the official SDK makes them."""
    request = Request()
    request.method = "POST"
    request.path = path or "/"
    request.query = OrderedDict([("Action", action), ("Version", VERSION)])
    request.headers = OrderedDict([("Content-Type", "application/json"), ("Host", host)])
    request.body = body
    SignerV4.sign(request, Credentials(access_key, secret_key, SERVICE, REGION))
    return dict(request.headers)


class Visual:
    """The Visual (Jimeng) API client of the volcengine provider: jimeng_* images and video jobs."""

    def __init__(self, *, provider: str, access_key: SecretStr | None, secret_key: SecretStr | None,
                 base_url: str, timeout: float) -> None:
        self.provider = provider
        self._ak = access_key.get_secret_value() if access_key else ""
        self._sk = secret_key.get_secret_value() if secret_key else ""
        self.http = VendorHTTP(provider=provider, base_url=base_url, timeout=timeout, secrets=[self._ak, self._sk],
                               parse_error=visual_error)

    async def call(self, action: str, body: dict[str, Any], model: str) -> tuple[dict[str, Any], str | None]:
        """`data` of a successful envelope, and the request id; ProviderError otherwise (HTTP 200 included)."""
        if not (self._ak and self._sk):
            raise AuthenticationError("VOLCENGINE_ACCESS_KEY and VOLCENGINE_SECRET_KEY must both be set",
                                      provider=self.provider, model=model)
        raw = json.dumps(body).encode()
        url = self.http.base_url
        headers = sign(host=url.netloc.decode(), path=url.path, action=action, body=raw,
                       access_key=self._ak, secret_key=self._sk)
        response = await self.http.send("POST", "", model=model, params={"Action": action, "Version": VERSION},
                                        content=raw, headers=headers)
        envelope = parse_json(response)
        if envelope.get("code") != VISUAL_OK:
            raise self.http.error(response.status_code, envelope, response.headers, model)
        return envelope.get("data") or {}, envelope.get("request_id")

    def _result(self, request: GenerationRequest, request_id: str | None, **kw: Any) -> GenerationResult:
        return GenerationResult(provider=self.provider, model=request.model.model, request_id=request_id, **kw)

    async def image(self, request: GenerationRequest) -> GenerationResult:
        """One CVProcess call; images come back as base64, plus URLs when response_format is url."""
        width, height = (int(x) for x in request.param("size").split("x"))
        want_url = request.param("response_format") == "url"
        body = {"req_key": request.model.model, "prompt": request.prompt, "seed": request.param("seed"),
                "width": width, "height": height, "return_url": want_url, "logo_info": {"add_logo": False}}
        data, request_id = await self.call("CVProcess", body, request.model.model)
        blobs = [base64.b64decode(b) for b in data.get("binary_data_base64") or []]
        urls = (data.get("image_urls") or []) if want_url else []
        images = []
        for i in range(max(len(blobs), len(urls))):
            blob = blobs[i] if i < len(blobs) else None
            url = urls[i] if i < len(urls) else None
            images.append(Media(sniff_mime(blob, "image/png") if blob else "image/png", data=blob, url=url,
                                url_expires_at=expires_in(IMAGE_URL_LIFETIME) if url else None))
        if not images:
            raise ProviderError("Jimeng answered without an image", provider=self.provider,
                                model=request.model.model, request_id=request_id)
        return self._result(request, request_id, images=images)

    async def submit_video(self, request: GenerationRequest) -> str:
        """CVSync2AsyncSubmitTask (v30 models take frames, not seconds); returns Jimeng's task_id."""
        body: dict[str, Any] = {"req_key": request.model.model, "prompt": request.prompt,
                                "seed": request.param("seed"), "aspect_ratio": request.param("aspect_ratio")}
        if request.param("duration") in FRAMES:
            body["frames"] = FRAMES[request.param("duration")]
        data, request_id = await self.call("CVSync2AsyncSubmitTask", body, request.model.model)
        if not data.get("task_id"):
            raise ProviderError("Jimeng accepted the task without a task_id", provider=self.provider,
                                model=request.model.model, request_id=request_id)
        return str(data["task_id"])

    async def poll_video(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """CVSync2AsyncGetResult: transient errors are raised (poll again), others end the job as failed."""
        model = request.model.model
        body = {"req_key": model, "task_id": task_id, "req_json": json.dumps({"return_url": True})}
        try:
            data, request_id = await self.call("CVSync2AsyncGetResult", body, model)
        except POLL_AGAIN:
            raise
        except ProviderError as error:       # the job ended in an error (review, internal failure)
            return JobStatus(JobState.FAILED, error=error)
        status = str(data.get("status") or "")
        if status in RUNNING:
            return JobStatus(RUNNING[status])
        if status == "done" and data.get("video_url"):
            video = Media("video/mp4", url=data["video_url"], url_expires_at=expires_in(VIDEO_URL_LIFETIME))
            return JobStatus(JobState.SUCCEEDED, 100,
                             self._result(request, request_id, video=video, provider_task_id=task_id))
        meaning = {"not_found": "Jimeng does not know this task (unknown, or older than 12 h)",
                   "expired": "the Jimeng task expired", "done": "the Jimeng task finished without a video"}
        return JobStatus(JobState.FAILED, error=ProviderError(
            meaning.get(status, f"the Jimeng task is {status or 'without a status'}"), provider=self.provider,
            model=model, code=status or None, request_id=request_id))

    async def aclose(self) -> None:
        """Close the HTTP connections to Visual."""
        await self.http.aclose()
