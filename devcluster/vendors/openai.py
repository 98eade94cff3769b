"""A local OpenAI: images/generations, chat/completions, videos.

Speaks shared/reference/provider-apis.md §4: bearer auth, `{"error": {message, type, param,
code}}` bodies, `x-request-id` on every answer, 429s with `x-ratelimit-*`, `retry-after` and
`retry-after-ms`; `gpt-image-*` answers base64 and refuses `response_format`; Sora jobs are
created from multipart/form-data with `seconds` a string, move queued -> in_progress ->
completed with a progress figure, and hand their MP4 out at `/videos/{id}/content`.
With `retired_gone=True` retired models answer 404 model_not_found, as they do live.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import time
from typing import Any

from devcluster.vendors._server import Fault, Req, Resp, VendorServer, mp4_for, png_for
from gentask.domain.catalog import MODELS
from gentask.domain.task import TaskType
from gentask.providers.fake import fake_text

OPENAI_MODELS = {m.model: m for m in MODELS if m.api == "openai"}
VIDEO_SIZES = {"sora-2": ("720x1280", "1280x720"), "sora-2-pro": ("720x1280", "1280x720", "1024x1792", "1792x1024")}
FAULT_BODIES: dict[str, tuple[int, str, str | None, str]] = {     # status, type, code, message
    "rate_limited": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests per min (RPM)."),
    "overloaded": (503, "server_error", None, "The engine is currently overloaded, please try again later."),
    "server_error": (500, "server_error", None, "The server had an error while processing your request."),
    "content_rejected": (400, "invalid_request_error", "content_policy_violation",
                         "Your request was rejected as a result of our safety system."),
    "quota": (429, "insufficient_quota", "insufficient_quota",
              "You exceeded your current quota, please check your plan and billing details."),
    "auth": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "bad_request": (400, "invalid_request_error", None, "Invalid request."),
}


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * 6}{key[-4:]}" if len(key) > 8 else "*" * len(key)


class OpenAIServer(VendorServer):
    vendor = "openai"
    base_path = "/v1"
    fault_kinds = tuple(FAULT_BODIES) + VendorServer.fault_kinds

    def __init__(self, api_key: str, *, retired_gone: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.retired_gone = retired_gone
        self.videos: dict[str, dict[str, Any]] = {}

    def reset_state(self) -> None:
        self.videos.clear()

    def request_id(self) -> str:
        return f"req_{self.next_id():032x}"

    def error(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Resp:
        return Resp(status, {"error": {"message": message, "type": type_, "param": param, "code": code}},
                    headers={"x-request-id": self.request_id(), **(headers or {})})

    def ok(self, body: Any, **headers: str) -> Resp:
        return Resp(200, body, headers={"x-request-id": self.request_id(), "openai-processing-ms": "7", **headers})

    def authenticate(self, req: Req) -> Resp | None:
        auth = req.headers.get("Authorization") or ""
        if auth == f"Bearer {self.api_key}":
            return None
        if not auth.startswith("Bearer "):
            return self.error(401, "You didn't provide an API key. You need to provide your API key in an "
                              "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        return self.error(401, f"Incorrect API key provided: {_mask(auth[7:])}. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def fault_response(self, fault: Fault, req: Req) -> Resp:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers = {"retry-after": f"{max(1, round(fault.retry_after))}",
                       "retry-after-ms": f"{fault.retry_after * 1000:g}"}
        if fault.kind == "error":
            return self.error(fault.status or 400, fault.message or "injected error",
                              code=None if fault.code is None else str(fault.code), headers=headers)
        status, type_, code, message = FAULT_BODIES[fault.kind]
        if status == 429:
            headers.update({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "120ms"})
        return self.error(status, message, type_, code, headers=headers)

    # --- routes -------------------------------------------------------------------------------------
    def route(self, req: Req) -> Resp:
        path = req.path[len(self.base_path):] if req.path.startswith(self.base_path) else req.path
        parts = path.strip("/").split("/")
        if req.method == "POST" and path == "/images/generations":
            return self.images(req)
        if req.method == "POST" and path == "/chat/completions":
            return self.chat(req)
        if parts[0] == "videos":
            if req.method == "POST" and len(parts) == 1:
                return self.create_video(req)
            if len(parts) == 2 and req.method in ("GET", "DELETE"):
                return self.get_video(parts[1]) if req.method == "GET" else self.delete_video(parts[1])
            if len(parts) == 3 and parts[2] == "content" and req.method == "GET":
                return self.video_content(parts[1], req)
        return self.error(404, f"Invalid URL ({req.method} {req.path})")

    def _json(self, req: Req) -> dict[str, Any] | Resp:
        try:
            body = req.json()
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.")
        return body if isinstance(body, dict) else self.error(400, "The body must be a JSON object.")

    def _model(self, model: Any, type_: TaskType) -> Resp | None:
        spec = OPENAI_MODELS.get(model) if isinstance(model, str) else None
        if spec is None or spec.type is not type_ or (self.retired_gone and spec.retired):
            return self.error(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        return None

    def images(self, req: Req) -> Resp:
        body = self._json(req)
        if isinstance(body, Resp):
            return body
        model = body.get("model", "dall-e-2")
        bad = self._model(model, TaskType.IMAGE)
        if bad:
            return bad
        spec = OPENAI_MODELS[model]
        if not body.get("prompt"):
            return self.error(400, "Missing required parameter: 'prompt'.", code="missing_required_parameter",
                              param="prompt")
        inline = spec.options.get("inline_only", False)
        if inline and "response_format" in body:
            return self.error(400, "Unknown parameter: 'response_format'.", code="unknown_parameter",
                              param="response_format")
        size = body.get("size", "1024x1024")
        if size != "auto" and not spec.params["size"].check(size):
            return self.error(400, f"Invalid value: '{size}'. Supported values are: {spec.params['size'].accepted}.",
                              code="invalid_value", param="size")
        n = body.get("n", 1)
        if not isinstance(n, int) or not spec.params["n"].check(n):
            return self.error(400, f"Invalid 'n': {n}; {model} supports {spec.params['n'].accepted}.",
                              code="invalid_value", param="n")
        fmt = "b64_json" if inline else body.get("response_format", "url")
        if fmt not in ("url", "b64_json"):
            return self.error(400, f"Invalid value: '{fmt}'. Supported values are: 'url' and 'b64_json'.",
                              code="invalid_value", param="response_format")
        w, h = (1024, 1024) if size == "auto" else (int(x) for x in size.split("x"))
        png = png_for(w, h, body["prompt"])
        data = [{"b64_json": base64.b64encode(png).decode()} if fmt == "b64_json" else
                {"url": self.put_file(f"img-{self.next_id()}.png", png, "image/png", lifetime=3600),
                 "revised_prompt": body["prompt"]} for _ in range(n)]
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if inline:
            answer.update(usage={"input_tokens": len(body["prompt"].split()), "output_tokens": 272 * n,
                                 "total_tokens": len(body["prompt"].split()) + 272 * n,
                                 "input_tokens_details": {"text_tokens": len(body["prompt"].split()),
                                                          "image_tokens": 0}},
                          size=f"{w}x{h}", quality="medium", output_format="png")
        return self.ok(answer)

    def chat(self, req: Req) -> Resp:
        body = self._json(req)
        if isinstance(body, Resp):
            return body
        bad = self._model(body.get("model"), TaskType.TEXT)
        if bad:
            return bad
        spec = OPENAI_MODELS[body["model"]]
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "Missing required parameter: 'messages'.", code="missing_required_parameter",
                              param="messages")
        field = spec.options.get("max_tokens_field", "max_tokens")
        if field == "max_completion_tokens" and "max_tokens" in body:
            return self.error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                              "'max_completion_tokens' instead.", code="unsupported_parameter", param="max_tokens")
        if "temperature" in body and "temperature" not in spec.params:
            return self.error(400, "Unsupported value: 'temperature' does not support this value with this model.",
                              code="unsupported_value", param="temperature")
        limit = body.get(field, body.get("max_tokens", 256))
        if not isinstance(limit, int) or limit < 1:
            return self.error(400, f"Invalid '{field}': {limit}.", code="invalid_value", param=field)
        text, finish = fake_text(str(messages[-1].get("content", "")), limit)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion = len(text.split())
        return self.ok({"id": f"chatcmpl-{self.next_id()}", "object": "chat.completion", "created": int(time.time()),
                        "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                     "finish_reason": finish, "logprobs": None}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                  "total_tokens": prompt_tokens + completion}})

    # --- videos ---------------------------------------------------------------------------------------
    def create_video(self, req: Req) -> Resp:
        ctype = req.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            return self.error(400, "Expected multipart/form-data.")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
        form = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
                for part in message.iter_parts()}
        model = form.get("model", "sora-2")
        bad = self._model(model, TaskType.VIDEO)
        if bad:
            return bad
        if not form.get("prompt"):
            return self.error(400, "Missing required parameter: 'prompt'.", code="missing_required_parameter",
                              param="prompt")
        seconds, size = form.get("seconds", "4"), form.get("size", "720x1280")
        if seconds not in ("4", "8", "12"):
            return self.error(400, f"Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'.",
                              code="invalid_value", param="seconds")
        if size not in VIDEO_SIZES[model]:
            return self.error(400, f"Invalid value: '{size}'. Supported values are: {', '.join(VIDEO_SIZES[model])}.",
                              code="invalid_value", param="size")
        video_id = f"video_{self.next_id():024x}"
        video = {"id": video_id, "object": "video", "model": model, "status": "queued", "progress": 0,
                 "created_at": int(time.time()), "completed_at": None, "expires_at": None, "seconds": seconds,
                 "size": size, "prompt": form["prompt"], "remixed_from_video_id": None, "error": None,
                 "_polls": 0, "_fail": req.fault}
        with self._lock:
            self.videos[video_id] = video
        return self.ok(self._public(video))

    @staticmethod
    def _public(video: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in video.items() if not k.startswith("_")}

    def get_video(self, video_id: str) -> Resp:
        with self._lock:
            video = self.videos.get(video_id)
            if video is None:
                return self.error(404, f"Video with id '{video_id}' not found.", code="not_found")
            if video["status"] in ("queued", "in_progress"):
                video["_polls"] += 1
                if video["_polls"] <= self.job_steps:
                    video["status"] = "queued" if video["_polls"] == 1 else "in_progress"
                    video["progress"] = min(99, 100 * (video["_polls"] - 1) // max(1, self.job_steps))
                elif video["_fail"] is not None:
                    fault = video["_fail"]
                    video.update(status="failed", error={"code": str(fault.code or "moderation_blocked"),
                                                         "message": fault.message or "The video was blocked."})
                else:
                    now = int(time.time())
                    video.update(status="completed", progress=100, completed_at=now, expires_at=now + 3600)
            return self.ok(self._public(video), **{"openai-poll-after-ms": "1000"})

    def video_content(self, video_id: str, req: Req) -> Resp:
        with self._lock:
            video = self.videos.get(video_id)
        if video is None or video["status"] != "completed":
            return self.error(404, f"Video with id '{video_id}' is not ready.", code="not_found")
        variant = req.arg("variant") or "video"
        if variant != "video":
            return self.error(400, f"Variant '{variant}' is not available.", code="invalid_value", param="variant")
        ratio = "16:9" if video["size"] in ("1280x720", "1792x1024") else "9:16"
        return Resp(200, mp4_for(video["prompt"], ratio, int(video["seconds"])), content_type="video/mp4",
                    headers={"x-request-id": self.request_id()})

    def delete_video(self, video_id: str) -> Resp:
        with self._lock:
            video = self.videos.pop(video_id, None)
        if video is None:
            return self.error(404, f"Video with id '{video_id}' not found.", code="not_found")
        return self.ok({"id": video_id, "object": "video.deleted", "deleted": True})
