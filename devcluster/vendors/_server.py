"""The machinery the local vendor servers share: a threaded HTTP/1.1 server on a free loopback port,
request recording, fault injection and files served at expiring URLs."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gentask.providers import media

JSON = "application/json; charset=utf-8"


@dataclass
class Fault:
    """One injected misbehaviour, used up after `times` matching requests (times=-1: forever).

    kind: a vendor-shaped error (rate_limited, overloaded, server_error, content_rejected, quota,
    auth, bad_request), `error` (status/code/message given verbatim in the vendor's error body),
    `slow` (answer normally after `delay` seconds), `drop` (close the connection unanswered) or
    `job_failed` (a vendor job created now ends failed with code/message, and reports `usage`
    when given: a job that ran before it failed, which the vendor bills).
    """

    kind: str
    times: int = 1
    path: str | None = None
    status: int | None = None
    code: str | int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    usage: dict[str, int] | None = None


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    target: str = ""                    # path?query as sent; what Fault.path is matched against
    fault: Fault | None = None          # a job_failed fault consumed by this request

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Resp:
    status: int
    body: Any = None                     # dict/list -> JSON; bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON

    def encode(self) -> bytes:
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        return json.dumps(self.body, ensure_ascii=False).encode()


DROP = Resp(0)


@lru_cache(maxsize=64)
def png_for(width: int, height: int, prompt: str) -> bytes:
    return media.png(width, height, prompt)


@lru_cache(maxsize=16)
def mp4_for(prompt: str, aspect_ratio: str, seconds: int) -> bytes:
    return media.mp4(prompt, aspect_ratio=aspect_ratio, seconds=min(seconds, 3), fps=4)


class VendorServer:
    """A vendor's HTTP API on 127.0.0.1:<free port>, in a background thread. Subclasses speak the vendor."""

    vendor = "vendor"
    base_path = ""
    fault_kinds: tuple[str, ...] = ("error", "slow", "drop", "job_failed")

    def __init__(self, *, job_steps: int = 2) -> None:
        self.job_steps = job_steps      # polls answered "in progress" before a job ends
        self.requests: list[Req] = []
        self.files: dict[str, tuple[bytes, str, float]] = {}
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> VendorServer:
        handler = type("Handler", (_Handler,), {"vendor_server": self})
        self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.vendor}-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> VendorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The base URL to configure (ARK_BASE_URL, VOLCENGINE_VISUAL_BASE_URL, OPENAI_BASE_URL)."""
        return self.origin + self.base_path

    # --- control ------------------------------------------------------------------------------
    def inject(self, kind: str, *, times: int = 1, path: str | None = None, status: int | None = None,
               code: str | int | None = None, message: str | None = None, retry_after: float | None = None,
               delay: float = 0.0, usage: dict[str, int] | None = None) -> Fault:
        """Misbehave on the next `times` requests whose path and query contain `path` (all when None),
        e.g. path="/images" or, for Visual, path="Action=CVSync2AsyncSubmitTask"."""
        if kind not in self.fault_kinds:
            raise ValueError(f"fault kind {kind!r} is not accepted by the {self.vendor} server; "
                             f"accepted: {', '.join(self.fault_kinds)}")
        fault = Fault(kind, times, path, status, code, message, retry_after, delay, usage)
        with self._lock:
            self._faults.append(fault)
        return fault

    def reset(self) -> None:
        """Forget faults, recorded requests, jobs and files."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.files.clear()
            self.reset_state()

    def reset_state(self) -> None:
        """Subclasses forget their jobs here."""

    def count(self, method: str, path_part: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and path_part in r.path)

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def put_file(self, name: str, data: bytes, mime: str, lifetime: float = 86400) -> str:
        with self._lock:
            self.files[name] = (data, mime, time.time() + lifetime)
        return f"{self.origin}/files/{name}?X-Tos-Expires={int(lifetime)}"

    # --- request handling -------------------------------------------------------------------------
    def _take_fault(self, req: Req) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or fault.path in req.target:
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def dispatch(self, req: Req) -> Resp:
        with self._lock:
            self.requests.append(req)
        if req.method == "GET" and req.path.startswith("/files/"):
            return self._file(req.path[len("/files/"):])
        denied = self.authenticate(req)
        if denied is not None:
            return denied
        fault = self._take_fault(req)
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(fault.delay)
            elif fault.kind == "drop":
                return DROP
            elif fault.kind == "job_failed":
                req.fault = fault
            else:
                return self.fault_response(fault, req)
        return self.route(req)

    def _file(self, name: str) -> Resp:
        with self._lock:
            found = self.files.get(name)
        if found is None or found[2] < time.time():
            return Resp(404, b"NoSuchKey: the object does not exist or its URL expired", content_type="text/plain")
        return Resp(200, found[0], content_type=found[1])

    # --- the vendor's part --------------------------------------------------------------------------
    def authenticate(self, req: Req) -> Resp | None:
        return None

    def fault_response(self, fault: Fault, req: Req) -> Resp:
        raise NotImplementedError

    def route(self, req: Req) -> Resp:
        raise NotImplementedError


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 256          # the default 5 drops connections when many clients open at once


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    vendor_server: VendorServer
    timeout = 30
    disable_nagle_algorithm = True    # headers and body go out in two writes; no 40 ms delayed-ACK stalls

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Req(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), self.headers, body,
                  self.path)
        try:
            resp = self.vendor_server.dispatch(req)
        except Exception as exc:  # a bug in a fake server must show, not hang the client
            resp = Resp(500, {"fake_server_bug": f"{type(exc).__name__}: {exc}"})
        if resp is DROP:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = resp.encode()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:   # quiet: tests read server.requests
        return None

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, OSError):
            pass   # the client went away (a timeout test), nothing to tell anyone
