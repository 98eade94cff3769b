"""The light client's HTTP/1.1 over asyncio streams, against raw loopback servers that answer
the ways an API server (or a broken middlebox) can: keep-alive, chunked, close, garbage, silence."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gentask.kube.client import KubeClient
from gentask.kube.config import Connection
from gentask.kube.errors import ClusterUnavailable
from gentask.kube.http11 import Http11

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """The request line and body of one request (the client always sends Content-Length with a body)."""
    line = (await reader.readline()).decode()
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = header.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return line.strip(), await reader.readexactly(length) if length else b""


class Server:
    """A loopback server; counts connections and records request lines."""

    def __init__(self, serve: Serve) -> None:
        self.serve, self.connections, self.requests = serve, 0, []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def ok(body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_requests_share_one_kept_alive_connection_and_bodies_arrive_whole():
    async def serve(reader, writer):
        server.requests.append(await read_request(reader))
        writer.write(ok(b'{"n":1}'))
        server.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\n{\"n\"\r\n3;ext=1\r\n:2}\r\n0\r\nX-Trailer: t\r\n\r\n")
        await writer.drain()
        await reader.read()
    async with Server(serve) as server:
        http = Http11(server.url, False, timeout=5)
        first = await http.request("GET", "/a", params={"labelSelector": "x=y"}, headers={"Accept": "application/json"})
        second = await http.request("POST", "/b", body=b'{"spec":{}}')
        await http.close()
    assert (first.status, first.body, first.headers["content-type"]) == (200, b'{"n":1}', "application/json")
    assert (second.status, second.body) == (201, b'{"n":2}')
    assert server.connections == 1
    assert server.requests == [("GET /a?labelSelector=x%3Dy HTTP/1.1", b""), ("POST /b HTTP/1.1", b'{"spec":{}}')]


async def test_a_body_that_ends_with_the_connection_and_connection_close():
    async def serve(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n{\"to\":\"the end\"}")
        await writer.drain()
    async with Server(serve) as server:
        http = Http11(server.url, False, timeout=5)
        assert (await http.request("GET", "/")).body == b'{"to":"the end"}'
        assert (await http.request("GET", "/")).body == b'{"to":"the end"}'
        await http.close()
    assert server.connections == 2        # the first answer ended its connection


async def test_a_closed_idle_connection_is_replaced_for_a_read_but_a_create_is_never_sent_twice():
    async def serve(reader, writer):
        server.requests.append(await read_request(reader))
        writer.write(ok(b"{}"))
        await writer.drain()              # then hang up without saying so: a kept-alive connection gone stale
    async with Server(serve) as server:
        http = Http11(server.url, False, timeout=5)
        await http.request("GET", "/1")
        await asyncio.sleep(0.05)
        assert (await http.request("GET", "/2")).status == 200
        await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            await http.request("POST", "/create", body=b"{}")
        await http.close()
    assert [line for line, _ in server.requests] == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"])
async def test_an_answer_that_is_not_http_is_the_cluster_unavailable(answer):
    async def serve(reader, writer):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
    async with Server(serve) as server:
        async with KubeClient(Connection(host=server.url, ssl=False), light=True) as kube:
            with pytest.raises(ClusterUnavailable) as err:
                await kube.request("GET", "/version")
    assert err.value.status == 0 and "unreachable" in str(err.value)


async def test_a_silent_server_times_out_and_the_next_request_gets_a_new_connection():
    calls = 0

    async def serve(reader, writer):
        nonlocal calls
        await read_request(reader)
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        writer.write(ok(b'{"late":false}'))
        await writer.drain()
        await reader.read()
    async with Server(serve) as server:
        http = Http11(server.url, False, timeout=0.3)
        with pytest.raises(TimeoutError):
            await http.request("GET", "/slow")
        assert (await http.request("GET", "/fast")).body == b'{"late":false}'
        await http.close()
    assert server.connections == 2


def test_only_http_urls():
    with pytest.raises(ValueError, match="not an http"):
        Http11("unix:///var/run/k8s.sock", False)
