"""The REST API served by a real uvicorn on a loopback port, against the session's cluster and FerretDB.

`start_api(**settings)` starts one in a thread (its own event loop) with the test's namespace
and three API keys: alice and bob (users) and root (admin). `api` is one with the defaults.
`Worker` writes a task's status the way the worker pod does, and stores its artifacts.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from kubernetes import client

from gentask.api.app import create_app
from gentask.config import Settings
from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.support.waits import describe_task, wait_for

KEYS = {"alice": "alice-key-5f1c9a", "bob": "bob-key-77d2e0", "root": "root-key-c3a8b1"}
API_KEYS = f"{KEYS['alice']}:alice,{KEYS['bob']}:bob,{KEYS['root']}:root:admin"
IMAGE = {"prompt": "a red fox in the snow", "provider": "fake", "model": "fake-image", "size": "64x64"}
VIDEO = {"prompt": "a disc crossing the frame", "provider": "fake", "model": "fake-video", "duration": 1}
TEXT = {"prompt": "write a haiku", "provider": "fake", "model": "fake-text", "max_tokens": 20}


# The API tests' own database, fresh each session: FerretDB scans a whole collection on every
# list and upsert, so a database that grows across runs slows every test down.
DATABASE = f"gentask_api_{uuid.uuid4().hex[:8]}"


def mongo_url(cluster) -> str:
    base, _, query = cluster.mongo_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + DATABASE + (f"?{query}" if query else "")


@pytest.fixture(scope="session", autouse=True)
def _api_database(cluster):
    yield
    from gentask.storage import connect
    connect(Settings(mongo_url=mongo_url(cluster))).client.drop_database(DATABASE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningAPI:
    url: str
    settings: Settings
    namespace: str
    server: uvicorn.Server
    thread: threading.Thread
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, user: str | None = "alice", *, header: str = "bearer") -> httpx.Client:
        headers = {}
        if user is not None:
            key = KEYS.get(user, user)
            headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.should_exit = True
        self.thread.join(15)


def launch(cluster, namespace: str, *, kubeconfig: str | Path | None = None, **overrides) -> RunningAPI:
    """Serve a new app on a free loopback port from a thread; returns once it answers."""
    values = {"namespace": namespace, "mongo_url": mongo_url(cluster), "api_keys": API_KEYS,
              "providers": ["volcengine", "openai", "fake"], "api_rate_per_user": 0, **overrides}
    settings = Settings(**values)
    app = create_app(settings, kubeconfig=str(kubeconfig or cluster.kubeconfig))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_for(lambda: (server.started, thread.is_alive()), 20, interval=0.02, until=lambda v: v[0],
             abort=lambda v: not v[1] and "the API's thread ended before it served", what=f"the API on port {port}")
    return RunningAPI(f"http://127.0.0.1:{port}", settings, namespace, server, thread)


@pytest.fixture
def start_api(cluster, namespace):
    running: list[RunningAPI] = []

    def start(**overrides) -> RunningAPI:
        running.append(launch(cluster, namespace, **overrides))
        return running[-1]

    yield start
    for api in running:
        api.stop()


def _make_namespace(cluster):
    # "api-", not the suite's "t-": the operator tests' operators watch t-*, and these tests move
    # their tasks along themselves, as the worker would
    core = client.CoreV1Api(cluster.api)
    name = f"api-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true"}}})
    return core, name


@pytest.fixture
def namespace(cluster):
    """A fresh namespace a test, where no operator runs."""
    core, name = _make_namespace(cluster)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def module_namespace(cluster):
    """A namespace shared by one module's tests (for data that is slow to build)."""
    core, name = _make_namespace(cluster)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def api(start_api) -> RunningAPI:
    return start_api()


@pytest.fixture
def alice(api) -> httpx.Client:
    return api.client("alice")


@pytest.fixture
def bob(api) -> httpx.Client:
    return api.client("bob")


@pytest.fixture
def root(api) -> httpx.Client:
    return api.client("root")


def create(c: httpx.Client, kind: str = "image", body: dict | None = None, **headers) -> dict:
    """Create a task and return its data; fail the test on anything but 200."""
    r = c.post(f"/api/v1/ai/{kind}/task", json=body or {"image": IMAGE, "video": VIDEO, "text": TEXT}[kind],
               headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def answers(base: str, proc: subprocess.Popen) -> bool:
    """The API process at base answers /healthz with 200; raises once the process has exited."""
    if proc.poll() is not None:
        raise AssertionError(f"the API exited with {proc.returncode}")
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Worker:
    """Moves tasks along as the worker pod would: status through the status subresource,
    files into the artifact store, the record into the mirror."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster = cluster
        self.api = client.CustomObjectsApi(cluster.api)
        self.namespace = namespace
        self.settings = Settings(mongo_url=mongo_url(cluster))

    def describe(self, name: str) -> str:
        return describe_task(self.cluster, self.namespace, name)

    def wait_result(self, c: httpx.Client, task_id: str, until, what: str, timeout: float = 30) -> dict:
        """GET /api/v1/ai/task/result/{task_id} until until(data) holds; the data then. A failure
        shows the API's last answer beside what the cluster holds."""
        def data() -> dict:
            r = c.get(f"/api/v1/ai/task/result/{task_id}")
            return r.json().get("data") or {"http_status": r.status_code, "body": r.text[:500]}
        return wait_for(data, timeout, until=until, what=f"the API to show task {task_id} {what}",
                        describe=lambda: self.describe(task_id))

    def get(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch_status(self, name: str, status: dict) -> dict:
        return self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name,
                                                              {"status": status})

    def run(self, name: str) -> dict:
        return self.patch_status(name, {"phase": "Running", "reason": "Started", "attempts": 1, "startTime": now()})

    def fail(self, name: str, reason: str = "ContentRejected", message: str = "the vendor refused the prompt") -> dict:
        return self.patch_status(name, {"phase": "Failed", "reason": reason, "message": message, "attempts": 1,
                                        "completionTime": now()})

    def store(self, uid: str, stem: str, data: bytes, mime: str) -> dict:
        from gentask.storage import ArtifactStore, connect
        ext = {"image/png": "png", "video/mp4": "mp4", "text/plain": "txt"}[mime]
        ref = ArtifactStore(connect(self.settings)).put(f"{uid}/1/{stem}.{ext}", data, mime_type=mime, task_uid=uid)
        return {"artifact": ref.name, "mimeType": ref.mime_type, "sizeBytes": ref.size_bytes, "sha256": ref.sha256}

    def succeed_image(self, name: str, png: bytes = b"\x89PNG\r\n\x1a\nfake-image-bytes") -> dict:
        uid = self.get(name)["metadata"]["uid"]
        entry = {**self.store(uid, "image-0", png, "image/png"), "url": "https://vendor.example/fox.png"}
        return self.patch_status(name, {
            "phase": "Succeeded", "reason": "Completed", "attempts": 1, "completionTime": now(),
            "servedBy": {"provider": "fake", "model": "fake-image"},
            "result": {"images": [entry], "usage": {"images": 1}}})

    def succeed_text(self, name: str, text: str) -> dict:
        return self.patch_status(name, {"phase": "Succeeded", "reason": "Completed", "attempts": 1,
                                        "completionTime": now(), "result": {"text": text, "usage": {"tokens": 3}}})

    def mirror(self, name: str) -> dict:
        from gentask.storage import TaskMirror, connect
        obj = self.get(name)
        TaskMirror(connect(self.settings)).upsert(obj)
        return obj


@pytest.fixture
def worker(cluster, namespace) -> Worker:
    return Worker(cluster, namespace)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
