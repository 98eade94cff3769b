"""A local Volcengine Visual (Jimeng): CVProcess, CVSync2AsyncSubmitTask, CVSync2AsyncGetResult.

Speaks shared/reference/provider-apis.md §3: dispatch on Action/Version; the V4 signature is
recomputed here from the secret key over the raw body bytes (independently of the SDK's signer,
following §3.2 step by step) and a mismatch gets the gateway's `ResponseMetadata.Error` body;
business answers use the `{code, data, message, request_id, status, time_elapsed}` envelope with
4xx/5xx on errors; task ids are numeric strings, `req_json` must be a string, jobs step
in_queue -> generating -> done, unknown ids answer `not_found`.

Parameter errors answer HTTP 400 with code 50200: the vendor's code for them is not in the
reference (unconfirmed); clients map them by the HTTP status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote

from devcluster.vendors._server import Fault, Req, Resp, VendorServer, mp4_for, png_for
from gentask.domain.catalog import MODELS
from gentask.domain.task import TaskType

VERSION = "2022-08-31"
SERVICE, REGION = "cv", "cn-north-1"
PARAM_ERROR = 50200
VISUAL_MODELS = {m.model: m for m in MODELS if m.api == "visual"}
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
FAULT_BODIES: dict[str, tuple[int, int, str]] = {
    "rate_limited": (429, 50429, "Request Has Reached API Limit, Please Try Later"),
    "overloaded": (429, 50430, "Request Has Reached API Concurrent Limit, Please Try Later"),
    "server_error": (500, 50500, "Internal Error"),
    "content_rejected": (400, 50412, "Pre Text Risk Not Pass"),
    "bad_request": (400, PARAM_ERROR, "Request Param Invalid"),
}
GATEWAY_CODES = {"MissingAuthenticationToken": 100001, "InvalidAccessKey": 100009, "SignatureDoesNotMatch": 100010,
                 "InvalidActionOrVersion": 100016}
_AUTH = re.compile(r"^HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def expected_signature(req: Req, signed_headers: list[str], secret_key: str, x_date: str) -> str:
    """The signature of §3.2, from the request as received and the secret."""
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                     for k in sorted(req.query) for v in req.query[k])
    lines = []
    for name in signed_headers:
        value = (req.headers.get(name) or "").strip()
        if name == "host":
            value = re.sub(r":(80|443)$", "", value)
        lines.append(f"{name}:{value}\n")
    canonical = "\n".join([req.method, quote(req.path or "/", safe="/-_.~"), query, "".join(lines),
                           ";".join(signed_headers), hashlib.sha256(req.body).hexdigest()])
    date = x_date[:8]
    to_sign = "\n".join(["HMAC-SHA256", x_date, f"{date}/{REGION}/{SERVICE}/request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(secret_key.encode(), date), REGION), SERVICE), "request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class VisualServer(VendorServer):
    vendor = "visual"
    base_path = ""
    fault_kinds = tuple(FAULT_BODIES) + ("auth",) + VendorServer.fault_kinds

    def __init__(self, access_key: str, secret_key: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.access_key = access_key
        self.secret_key = secret_key
        self.jobs: dict[str, dict[str, Any]] = {}

    def reset_state(self) -> None:
        self.jobs.clear()

    def request_id(self) -> str:
        return f"{time.strftime('%Y%m%d%H%M%S')}{self.next_id():010d}"

    def gateway_error(self, req: Req, status: int, code: str, message: str) -> Resp:
        return Resp(status, {"ResponseMetadata": {
            "RequestId": self.request_id(), "Action": req.arg("Action") or "", "Version": req.arg("Version") or "",
            "Service": SERVICE, "Region": REGION,
            "Error": {"CodeN": GATEWAY_CODES.get(code, 100000), "Code": code, "Message": message}}})

    def envelope(self, code: int, data: Any, message: str, status: int = 200, headers: dict | None = None) -> Resp:
        return Resp(status, {"code": code, "data": data, "message": message, "request_id": self.request_id(),
                             "status": code, "time_elapsed": "12.5ms"}, headers=headers or {})

    def authenticate(self, req: Req) -> Resp | None:
        auth = req.headers.get("Authorization")
        x_date = req.headers.get("X-Date") or ""
        if not auth:
            return self.gateway_error(req, 401, "MissingAuthenticationToken", "The request has no Authorization.")
        match = _AUTH.match(auth)
        if match is None:
            return self.gateway_error(req, 401, "SignatureDoesNotMatch", "The Authorization header is malformed.")
        ak, date, region, service, signed, signature = match.groups()
        if ak != self.access_key:
            return self.gateway_error(req, 401, "InvalidAccessKey", "The access key is invalid.")
        names = signed.split(";")
        body_hash = req.headers.get("X-Content-Sha256")
        good = (region == REGION and service == SERVICE and date == x_date[:8] and "host" in names
                and "x-date" in names and body_hash == hashlib.sha256(req.body).hexdigest()
                and hmac.compare_digest(signature, expected_signature(req, names, self.secret_key, x_date)))
        if not good:
            return self.gateway_error(req, 401, "SignatureDoesNotMatch",
                                      "The request signature we calculated does not match the signature you provided.")
        return None

    def fault_response(self, fault: Fault, req: Req) -> Resp:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        if fault.kind == "auth":
            return self.gateway_error(req, 401, "InvalidAccessKey", "The access key is invalid.")
        if fault.kind == "error":
            if isinstance(fault.code, str) and not fault.code.isdigit():
                return self.gateway_error(req, fault.status or 400, fault.code, fault.message or "injected error")
            return self.envelope(int(fault.code or PARAM_ERROR), None, fault.message or "injected error",
                                 fault.status or 400, headers)
        status, code, message = FAULT_BODIES[fault.kind]
        return self.envelope(code, None, message, status, headers)

    # --- routes -----------------------------------------------------------------------------------
    def route(self, req: Req) -> Resp:
        action, version = req.arg("Action"), req.arg("Version")
        actions = {"CVProcess": self.process, "CVSync2AsyncSubmitTask": self.submit,
                   "CVSync2AsyncGetResult": self.get_result}
        if req.method != "POST" or req.path != "/" or action not in actions or version != VERSION:
            return self.gateway_error(req, 404, "InvalidActionOrVersion",
                                      f"Could not find operation {action} for version {version}")
        try:
            body = json.loads(req.body)
        except ValueError:
            return self.envelope(PARAM_ERROR, None, "Request Body Is Not JSON", 400)
        if not isinstance(body, dict):
            return self.envelope(PARAM_ERROR, None, "Request Body Must Be A JSON Object", 400)
        return actions[action](body, req)

    def _req_key(self, body: dict[str, Any], type_: TaskType) -> Resp | None:
        spec = VISUAL_MODELS.get(body.get("req_key") or "")
        if spec is None or spec.type is not type_:
            return self.envelope(PARAM_ERROR, None, f"Invalid req_key: {body.get('req_key')}", 400)
        if not body.get("prompt"):
            return self.envelope(PARAM_ERROR, None, "Missing prompt", 400)
        return None

    def process(self, body: dict[str, Any], req: Req) -> Resp:
        bad = self._req_key(body, TaskType.IMAGE)
        if bad:
            return bad
        width, height = body.get("width", 512), body.get("height", 512)
        if not all(isinstance(v, int) and 256 <= v <= 768 for v in (width, height)):
            return self.envelope(PARAM_ERROR, None, f"Invalid width/height: {width}x{height}", 400)
        png = png_for(width, height, body["prompt"])
        urls = [self.put_file(f"jimeng-{self.next_id()}.png", png, "image/png")] if body.get("return_url") else None
        return self.envelope(10000, {"algorithm_base_resp": {"status_code": 0, "status_message": "Success"},
                                     "binary_data_base64": [base64.b64encode(png).decode()], "image_urls": urls,
                                     "llm_result": "", "pe_result": "", "request_id": self.request_id()}, "Success")

    def submit(self, body: dict[str, Any], req: Req) -> Resp:
        bad = self._req_key(body, TaskType.VIDEO)
        if bad:
            return bad
        ratio = body.get("aspect_ratio", "16:9")
        if ratio not in RATIOS:
            return self.envelope(PARAM_ERROR, None, f"Invalid aspect_ratio: {ratio}", 400)
        if "frames" in body and body["frames"] not in (121, 241):
            return self.envelope(PARAM_ERROR, None, f"Invalid frames: {body['frames']}", 400)
        task_id = str(7392616336519610000 + self.next_id())
        with self._lock:
            self.jobs[task_id] = {"req_key": body["req_key"], "prompt": body["prompt"], "ratio": ratio,
                                  "seconds": 10 if body.get("frames") == 241 else 5, "polls": 0,
                                  "fail": req.fault, "status": "in_queue"}
        return self.envelope(10000, {"task_id": task_id}, "Success")

    def get_result(self, body: dict[str, Any], req: Req) -> Resp:
        if not body.get("task_id") or not body.get("req_key"):
            return self.envelope(PARAM_ERROR, None, "Missing req_key or task_id", 400)
        if "req_json" in body:
            if not isinstance(body["req_json"], str):
                return self.envelope(PARAM_ERROR, None, "req_json must be a JSON string", 400)
            try:
                json.loads(body["req_json"])
            except ValueError:
                return self.envelope(PARAM_ERROR, None, "req_json is not valid JSON", 400)
        with self._lock:
            job = self.jobs.get(str(body["task_id"]))
            if job is None or job["req_key"] != body["req_key"]:
                return self.envelope(10000, {"status": "not_found"}, "Success")
            job["polls"] += 1
            if job["polls"] <= self.job_steps:
                job["status"] = "in_queue" if job["polls"] == 1 else "generating"
                return self.envelope(10000, {"status": job["status"]}, "Success")
            job["status"] = "done"
            fault: Fault | None = job["fail"]
        if fault is not None:
            code = int(fault.code or 50511)
            return self.envelope(code, None, fault.message or "Post Img Risk Not Pass", fault.status or 400)
        url = self.put_file(f"jimeng-{body['task_id']}.mp4", mp4_for(job["prompt"], job["ratio"], job["seconds"]),
                            "video/mp4", lifetime=3600)
        return self.envelope(10000, {"status": "done", "video_url": url, "aigc_meta_tagged": True,
                                     "binary_data_base64": []}, "Success")
