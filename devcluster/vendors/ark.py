"""A local Volcengine Ark: images/generations, chat/completions, contents/generations/tasks.

Speaks shared/reference/provider-apis.md §2: bearer auth (401 AuthenticationError otherwise),
`null` read as absent, errors as `{"error": {code, message, param, type}}` with the vendor's
status codes, an `X-Request-Id` on every answer, image URLs that expire, and video tasks that
step queued -> running -> succeeded one poll at a time (or end failed when told to).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from devcluster.vendors._server import Fault, Req, Resp, VendorServer, mp4_for, png_for
from gentask.domain.catalog import MODELS
from gentask.domain.task import TaskType
from gentask.providers.fake import fake_text

ARK_MODELS = {m.model: m for m in MODELS if m.api == "ark"}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
FAULT_BODIES: dict[str, tuple[int, str, str]] = {
    "rate_limited": (429, "ModelAccountRpmRateLimitExceeded",
                     "Request failed because you have exceeded the RPM limit of the model"),
    "overloaded": (429, "ServerOverloaded", "The service is currently experiencing high load"),
    "server_error": (500, "InternalServiceError", "The service encountered an unexpected internal error"),
    "content_rejected": (400, "InputTextSensitiveContentDetected",
                         "The request failed because the input text may contain sensitive information"),
    "quota": (429, "QuotaExceeded", "Your account has exhausted its quota"),
    "auth": (401, "AuthenticationError", "The API key in the request is missing or invalid"),
    "bad_request": (400, "InvalidParameter", "A parameter specified in the request is not valid"),
}
# Seedance's output sizes at 16:9 (other ratios keep about the same area); it bills
# width x height x 24 fps x seconds / 1024 video tokens (usage.completion_tokens)
VIDEO_PIXELS = {"480p": 864 * 480, "720p": 1248 * 704, "1080p": 1920 * 1088}
ERROR_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests",
               500: "InternalServerError"}


class ArkServer(VendorServer):
    vendor = "ark"
    base_path = "/api/v3"
    fault_kinds = tuple(FAULT_BODIES) + VendorServer.fault_kinds

    def __init__(self, api_key: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.tasks: dict[str, dict[str, Any]] = {}

    def reset_state(self) -> None:
        self.tasks.clear()

    def request_id(self) -> str:
        return f"0217{int(time.time() * 1000)}{self.next_id():08x}"

    def error(self, status: int, code: str, message: str, param: str = "", headers: dict | None = None) -> Resp:
        rid = self.request_id()
        return Resp(status, {"error": {"code": code, "message": f"{message} Request id: {rid}", "param": param,
                                       "type": ERROR_TYPES.get(status, "BadRequest")}},
                    headers={"X-Request-Id": rid, **(headers or {})})

    def ok(self, body: Any) -> Resp:
        return Resp(200, body, headers={"X-Request-Id": self.request_id()})

    def authenticate(self, req: Req) -> Resp | None:
        if req.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error(401, "AuthenticationError",
                              "The API key or AK/SK in the request is missing or invalid.")
        return None

    def fault_response(self, fault: Fault, req: Req) -> Resp:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        if fault.kind == "error":
            return self.error(fault.status or 400, str(fault.code or "InvalidParameter"),
                              fault.message or "injected error", headers=headers)
        status, code, message = FAULT_BODIES[fault.kind]
        return self.error(status, code, message, headers=headers)

    # --- routes -----------------------------------------------------------------------------------
    def route(self, req: Req) -> Resp:
        path = req.path[len(self.base_path):] if req.path.startswith(self.base_path) else req.path
        tasks = "/contents/generations/tasks"
        if req.method == "POST" and path == "/images/generations":
            return self.images(req)
        if req.method == "POST" and path == "/chat/completions":
            return self.chat(req)
        if req.method == "POST" and path == tasks:
            return self.create_task(req)
        if req.method == "GET" and path == tasks:
            return self.list_tasks(req)
        if path.startswith(tasks + "/") and req.method in ("GET", "DELETE"):
            task_id = path[len(tasks) + 1:]
            return self.get_task(task_id) if req.method == "GET" else self.delete_task(task_id)
        return self.error(404, "NotFound", f"{req.method} {req.path} is not an Ark API")

    def _body(self, req: Req) -> dict[str, Any] | Resp:
        try:
            body = req.json()
        except ValueError:
            return self.error(400, "InvalidParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(400, "InvalidParameter", "The request body must be a JSON object.")
        return {k: v for k, v in body.items() if v is not None}          # the SDK sends unset fields as null

    def _model(self, body: dict[str, Any], type_: TaskType) -> Resp | None:
        model = body.get("model")
        if not model:
            return self.error(400, "MissingParameter", "The request failed because it is missing one or multiple "
                              "required parameters.", "model")
        spec = ARK_MODELS.get(model)
        if spec is None or spec.type is not type_:
            return self.error(404, "InvalidEndpointOrModel.NotFound",
                              f"The model or endpoint {model} does not exist or you do not have access to it.")
        return None

    def images(self, req: Req) -> Resp:
        body = self._body(req)
        if isinstance(body, Resp):
            return body
        bad = self._model(body, TaskType.IMAGE)
        if bad:
            return bad
        if not body.get("prompt"):
            return self.error(400, "MissingParameter", "The parameter `prompt` is required.", "prompt")
        size = self._size(body["model"], body.get("size", "1024x1024" if "3-0" in body["model"] else "2048x2048"))
        if size is None:
            return self.error(400, "InvalidParameter", f"The parameter `size` specified in the request is not "
                              f"valid: {body.get('size')}.", "size")
        fmt = body.get("response_format", "url")
        if fmt not in ("url", "b64_json"):
            return self.error(400, "InvalidParameter", "The parameter `response_format` must be url or b64_json.",
                              "response_format")
        seed = body.get("seed", -1)
        if not isinstance(seed, int) or not -1 <= seed <= 2147483647:
            return self.error(400, "InvalidParameter", "The parameter `seed` must be in [-1, 2147483647].", "seed")
        count = 1
        if body.get("sequential_image_generation") == "auto":
            count = int((body.get("sequential_image_generation_options") or {}).get("max_images", 15))
        png = png_for(size[0], size[1], body["prompt"])
        data = []
        for _ in range(count):
            if fmt == "b64_json":
                data.append({"b64_json": base64.b64encode(png).decode(), "size": f"{size[0]}x{size[1]}"})
            else:
                url = self.put_file(f"img-{self.next_id()}.png", png, "image/png")
                data.append({"url": url, "size": f"{size[0]}x{size[1]}"})
        return self.ok({"model": body["model"], "created": int(time.time()), "data": data,
                        "usage": {"generated_images": count, "output_tokens": 4096 * count,
                                  "total_tokens": 4096 * count}})

    @staticmethod
    def _size(model: str, value: Any) -> tuple[int, int] | None:
        named = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}
        if "seedream-4" in model and value in named:
            return named[value]
        try:
            w, h = (int(x) for x in str(value).lower().split("x"))
        except ValueError:
            return None
        if "3-0" in model:
            return (w, h) if 512 <= w <= 2048 and 512 <= h <= 2048 else None
        ok = 1280 * 720 <= w * h <= 4096 * 4096 and 1 / 16 <= w / h <= 16
        return (w, h) if ok else None

    def chat(self, req: Req) -> Resp:
        body = self._body(req)
        if isinstance(body, Resp):
            return body
        bad = self._model(body, TaskType.TEXT)
        if bad:
            return bad
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and "content" in m
                for m in messages):
            return self.error(400, "InvalidParameter", "The parameter `messages` is not valid.", "messages")
        limit = ARK_MODELS[body["model"]].params["max_tokens"]
        max_tokens = body.get("max_tokens", 4096)
        if not isinstance(max_tokens, int) or not limit.check(max_tokens):
            return self.error(400, "InvalidParameter", f"The parameter `max_tokens` must be in {limit.accepted}.",
                              "max_tokens")
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            return self.error(400, "InvalidParameter", "The parameter `temperature` must be in [0, 2].", "temperature")
        prompt = str(messages[-1]["content"])
        text, finish = fake_text(prompt, max_tokens)
        prompt_tokens = sum(len(str(m["content"]).split()) for m in messages)
        completion = len(text.split())
        return self.ok({
            "id": self.request_id(), "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion, "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}})

    # --- video tasks --------------------------------------------------------------------------------
    def create_task(self, req: Req) -> Resp:
        body = self._body(req)
        if isinstance(body, Resp):
            return body
        bad = self._model(body, TaskType.VIDEO)
        if bad:
            return bad
        content = body.get("content")
        texts = [c.get("text") for c in content or [] if isinstance(c, dict) and c.get("type") == "text"]
        if not texts or not texts[0]:
            return self.error(400, "MissingParameter", "The parameter `content` must hold a text item.", "content")
        checks = [("ratio", lambda v: v in RATIOS), ("duration", lambda v: isinstance(v, int) and 2 <= v <= 12),
                  ("resolution", lambda v: v in ("480p", "720p", "1080p")),
                  ("seed", lambda v: isinstance(v, int) and -1 <= v <= 2147483647)]
        for name, check in checks:
            if name in body and not check(body[name]):
                return self.error(400, "InvalidParameter", f"The parameter `{name}` specified in the request is "
                                  f"not valid: {body[name]}.", name)
        task_id = f"cgt-{time.strftime('%Y%m%d%H%M%S')}-{self.next_id():05d}"
        now = int(time.time())
        task = {"id": task_id, "model": body["model"], "status": "queued", "created_at": now, "updated_at": now,
                "seed": body.get("seed", -1), "resolution": body.get("resolution", "1080p"),
                "ratio": body.get("ratio", "16:9"), "duration": body.get("duration", 5), "framespersecond": 24,
                "service_tier": "default", "execution_expires_after": 172800, "generate_audio": False,
                "draft": False, "_prompt": texts[0], "_polls": 0, "_fail": req.fault}
        with self._lock:
            self.tasks[task_id] = task
        return self.ok({"id": task_id})

    def _advance(self, task: dict[str, Any]) -> None:
        if task["status"] not in ("queued", "running"):
            return
        task["_polls"] += 1
        task["updated_at"] = int(time.time())
        if task["_polls"] <= self.job_steps:
            task["status"] = "queued" if task["_polls"] == 1 else "running"
            return
        fault: Fault | None = task["_fail"]
        if fault is not None:
            task["status"] = "failed"
            task["error"] = {"code": str(fault.code or "OutputVideoSensitiveContentDetected"),
                             "message": fault.message or "The generated video may contain sensitive information."}
            if fault.usage is not None:        # it ran before it failed: what the vendor bills
                task["usage"] = dict(fault.usage)
            return
        video = mp4_for(task["_prompt"], task["ratio"] if task["ratio"] != "adaptive" else "16:9", task["duration"])
        task["status"] = "succeeded"
        task["content"] = {"video_url": self.put_file(f"{task['id']}.mp4", video, "video/mp4")}
        tokens = VIDEO_PIXELS.get(task["resolution"], VIDEO_PIXELS["1080p"]) * 24 * int(task["duration"]) // 1024
        task["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}

    @staticmethod
    def _public(task: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in task.items() if not k.startswith("_")}

    def get_task(self, task_id: str) -> Resp:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return self.error(404, "ResourceNotFound", f"The task {task_id} does not exist.")
            self._advance(task)
            return self.ok(self._public(task))

    def delete_task(self, task_id: str) -> Resp:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return self.error(404, "ResourceNotFound", f"The task {task_id} does not exist.")
            if task["status"] == "queued":
                task["status"] = "cancelled"
            else:
                del self.tasks[task_id]
        return self.ok({})

    def list_tasks(self, req: Req) -> Resp:
        page, size = int(req.arg("page_num") or 1), int(req.arg("page_size") or 10)
        status, ids = req.arg("filter.status"), req.query.get("filter.task_ids")
        with self._lock:
            items = [self._public(t) for t in self.tasks.values()
                     if (not status or t["status"] == status) and (not ids or t["id"] in ids)]
        return self.ok({"total": len(items), "items": items[(page - 1) * size:page * size]})
