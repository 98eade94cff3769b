"""KubeClient and TaskClient against a real local server: how each answer becomes a result or an error."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from gentask.kube.client import KubeClient, task_path
from gentask.kube.config import Connection
from gentask.kube.errors import AlreadyExists, ClusterUnavailable, KubeError, TaskExists, WatchExpired
from gentask.kube.tasks import TaskClient

PATH = task_path("tasks", "img-1")


def status(code: int, reason: str, message: str = "", details: dict | None = None,
           headers: dict | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code, **({"details": details} if details else {})}
    return web.json_response(body, status=code, headers=headers)


def answer(response):
    """A handler that answers a fresh response each time (a Response object serves once)."""
    async def handler(_request: web.Request) -> web.Response:
        return response()
    return handler


@pytest.fixture(params=[False, True], ids=["aiohttp", "streams"])
def light(request) -> bool:
    """Each test once with the aiohttp pool and once with the light client a worker uses."""
    return request.param


@pytest.fixture
async def api(start_server, light):
    server = await start_server()
    clients: list[KubeClient] = []

    def client(cls=KubeClient, timeout: float = 5.0, light: bool = light):
        c = cls(Connection(host=server.url, ssl=False), timeout=timeout, light=light)
        clients.append(c)
        return c
    yield server, client
    for c in clients:
        await c.close()


async def test_404_is_not_found_and_the_task_client_says_none(api):
    server, client = api
    server.on("GET", PATH, answer(lambda: status(404, "NotFound", 'generationtasks "img-1" not found')))
    with pytest.raises(KubeError) as err:
        await client().get_task("tasks", "img-1")
    exc = err.value
    assert (exc.status, exc.reason, exc.not_found, exc.unavailable) == (404, "NotFound", True, False)
    assert exc.message == 'generationtasks "img-1" not found' and not isinstance(exc, ClusterUnavailable)
    assert await client(TaskClient).get("tasks", "img-1") is None


async def test_409_already_exists_and_conflict(api):
    server, client = api
    server.on("POST", task_path("tasks"), answer(lambda: status(409, "AlreadyExists", "exists", {"name": "img-1"})))
    server.on("PATCH", PATH + "/status", answer(lambda: status(409, "Conflict", "the object has been modified")))
    server.on("DELETE", PATH, answer(lambda: status(409, "Conflict", "Precondition failed: UID in precondition")))
    with pytest.raises(TaskExists) as err:
        await client(TaskClient).create("tasks", {"metadata": {"name": "img-1"}})
    assert err.value.already_exists and err.value.conflict and err.value.details == {"name": "img-1"}
    server.on("POST", "/apis/batch/v1/namespaces/tasks/jobs", answer(lambda: status(409, "AlreadyExists", "exists")))
    with pytest.raises(AlreadyExists) as job_err:
        await client().create_job({"metadata": {"name": "j", "namespace": "tasks"}})
    assert not isinstance(job_err.value, TaskExists)
    with pytest.raises(KubeError) as err:
        await client().patch_task_status("tasks", "img-1", {"phase": "Queued"}, resource_version="7")
    assert err.value.conflict and not err.value.already_exists
    sent = server.seen[-1]
    assert sent.headers["Content-Type"] == "application/merge-patch+json"
    assert await client(TaskClient).delete("tasks", "img-1", uid="u-1") is False


async def test_the_requests_carry_the_merge_patch_and_the_preconditions(api):
    server, client = api
    bodies: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"metadata": {"name": "img-1"}})
    server.on("PATCH", PATH + "/status", record)
    server.on("DELETE", PATH, record)
    server.on("PATCH", PATH, record)
    kube = client(TaskClient)
    await kube.patch_task_status("tasks", "img-1", {"phase": "Queued"}, resource_version="7")
    await kube.delete("tasks", "img-1", uid="u-1")
    await kube.cancel("tasks", "img-1")
    assert bodies == [{"status": {"phase": "Queued"}, "metadata": {"resourceVersion": "7"}},
                      {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                       "preconditions": {"uid": "u-1"}},
                      {"spec": {"cancel": True}}]


async def test_422_keeps_the_details_the_api_reports(api):
    server, client = api
    causes = [{"reason": "FieldValueInvalid", "message": "Invalid value", "field": "spec.prompt"}]
    server.on("POST", task_path("tasks"), answer(lambda: status(422, "Invalid", "is invalid", {"causes": causes})))
    with pytest.raises(KubeError) as err:
        await client(TaskClient).create("tasks", {})
    assert err.value.status == 422 and err.value.details["causes"] == causes and not err.value.unavailable


async def test_a_429_with_a_short_retry_after_is_sent_again_after_that_wait(api):
    server, client = api
    sent: list[float] = []
    loop = asyncio.get_running_loop()

    async def throttled_twice(_request: web.Request) -> web.Response:
        sent.append(loop.time())
        if len(sent) <= 2:
            return status(429, "TooManyRequests", "too many requests, please try again later",
                          headers={"Retry-After": "0.2"})
        return web.json_response({"metadata": {"name": "img-1"}})
    server.on("GET", PATH, throttled_twice)
    assert (await client().get_task("tasks", "img-1"))["metadata"]["name"] == "img-1"
    assert len(sent) == 3 and sent[1] - sent[0] >= 0.2 and sent[2] - sent[1] >= 0.2, sent


async def test_a_429_that_stays_is_unavailable_after_three_more_tries(api):
    server, client = api
    sent: list[int] = []

    async def throttled(_request: web.Request) -> web.Response:
        sent.append(1)
        return status(429, "TooManyRequests", "slow down", headers={"Retry-After": "0"})
    server.on("GET", PATH, throttled)
    with pytest.raises(ClusterUnavailable) as err:
        await client().get_task("tasks", "img-1")
    assert err.value.status == 429 and len(sent) == 4


async def test_429_with_retry_after_and_500_are_unavailable(api):
    server, client = api
    server.on("GET", PATH, answer(lambda: status(429, "TooManyRequests", "slow down", headers={"Retry-After": "7"})))
    with pytest.raises(ClusterUnavailable) as err:
        await client(TaskClient).get("tasks", "img-1")
    exc = err.value
    assert isinstance(exc, KubeError) and exc.unavailable and exc.retry_after == 7.0 and exc.status == 429
    assert str(exc) == "the Kubernetes API server answered 429 TooManyRequests"   # 7 s: the caller's to wait
    server.on("GET", PATH, answer(lambda: web.Response(status=500, text="boom")))
    with pytest.raises(ClusterUnavailable) as err:
        await client(TaskClient).get("tasks", "img-1")
    assert err.value.status == 500 and err.value.retry_after is None and err.value.unavailable


async def test_a_closed_connection_and_a_timeout_are_unavailable(light):
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
    closing = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    slow = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        for server, timeout in ((closing, 5.0), (slow, 0.3)):
            port = server.sockets[0].getsockname()[1]
            async with TaskClient(Connection(host=f"http://127.0.0.1:{port}", ssl=False), timeout=timeout,
                                  light=light) as kube:
                with pytest.raises(ClusterUnavailable) as err:
                    await kube.get("tasks", "img-1")
            assert err.value.status == 0 and err.value.unavailable and "unreachable" in str(err.value)
    finally:
        closing.close()
        slow.close()


async def test_list_follows_continue_and_returns_the_version(api):
    server, client = api

    async def pages(request: web.Request) -> web.Response:
        assert request.query["limit"] == "2" and request.query.get("labelSelector") == "a=b"
        if request.query.get("continue") == "next":
            return web.json_response({"items": [{"n": 3}], "metadata": {"resourceVersion": "42"}})
        return web.json_response({"items": [{"n": 1}, {"n": 2}], "metadata": {"continue": "next"}})
    server.on("GET", task_path("tasks"), pages)
    items, version = await client(TaskClient).list("tasks", label_selector="a=b", page=2)
    assert items == [{"n": 1}, {"n": 2}, {"n": 3}] and version == "42"


async def test_watch_streams_events_and_410_is_expired(api):
    server, client = api

    async def stream(request: web.Request) -> web.StreamResponse:
        if request.query["resourceVersion"] == "old":
            return status(410, "Expired", "too old resource version")
        resp = web.StreamResponse()
        await resp.prepare(request)
        for event in ({"type": "ADDED", "object": {"metadata": {"name": "a"}}},
                      {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
                      {"type": "ERROR", "object": {"code": 410, "message": "gone"}}):
            await resp.write(json.dumps(event).encode() + b"\n")
        return resp
    server.on("GET", task_path("tasks"), stream)
    kube = client(TaskClient, light=False)
    with pytest.raises(WatchExpired):
        async for _ in kube.watch("tasks", "old"):
            pass
    seen = []
    with pytest.raises(WatchExpired) as err:
        async for kind, obj in kube.watch("tasks", "5"):
            seen.append((kind, obj))
    assert seen == [("ADDED", {"metadata": {"name": "a"}}), ("BOOKMARK", {"metadata": {"resourceVersion": "9"}})]
    assert str(err.value) == "5" and err.value.gone


async def test_version_and_typed_creates_use_their_paths(api):
    server, client = api
    made = []

    async def created(request: web.Request) -> web.Response:
        made.append((request.path, (await request.json())["kind"]))
        return web.json_response({}, status=201)
    server.on("GET", "/version", answer(lambda: web.json_response({"gitVersion": "v1.36.3"})))
    for path in ("/api/v1/namespaces/tasks/serviceaccounts",
                 "/apis/rbac.authorization.k8s.io/v1/namespaces/tasks/roles",
                 "/apis/rbac.authorization.k8s.io/v1/namespaces/tasks/rolebindings",
                 "/apis/batch/v1/namespaces/tasks/jobs", "/api/v1/namespaces/tasks/events"):
        server.on("POST", path, created)
    kube = client()
    assert (await kube.version())["gitVersion"] == "v1.36.3"
    meta = {"metadata": {"name": "x", "namespace": "tasks"}}
    await kube.create_service_account(meta)
    await kube.create_role(meta)
    await kube.create_role_binding(meta)
    await kube.create_job(meta)
    await kube.create_event(meta)
    assert [k for _, k in made] == ["ServiceAccount", "Role", "RoleBinding", "Job", "Event"]


async def test_a_light_client_cannot_watch(api):
    _server, client = api
    with pytest.raises(TypeError, match="light KubeClient cannot watch"):
        async for _ in client(TaskClient, light=True).watch("tasks", "1"):
            pass
