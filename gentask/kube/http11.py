"""A small HTTP/1.1 client on asyncio streams, for a process that makes a few requests and exits.

A worker pod reads its task and patches the task's status a few times; aiohttp's import alone
costs it about 0.14 s of CPU (most of what it spends besides the task), and its pooling and
streaming are of no use to it. This speaks just what the API server answers: one keep-alive
connection used one request at a time, TLS with the connection's context, bodies with
Content-Length or chunked. Watches are not for it: gentask.kube.client uses aiohttp for them.

Failures come out as OSError (ConnectionError for an answer that is not HTTP) or TimeoutError;
KubeClient turns them into ClusterUnavailable.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

MAX_HEADER_LINE = 65536
MAX_HEADERS = 200
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})  # PATCH: merge patches of status


class Answer(NamedTuple):
    """A response: its status, its headers (lower-case names) and its whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Http11:
    """Requests to one origin over one reused connection; `close` ends it."""

    def __init__(self, base_url: str, context: ssl.SSLContext | bool, *, server_hostname: str | None = None,
                 timeout: float | None = None, connect_timeout: float = 30.0) -> None:
        """`context` as KubeClient gets it (False: TLS without verification); `timeout` bounds each request."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self.authority = url.netloc.rsplit("@", 1)[-1]
        self.tls: ssl.SSLContext | None = None
        if url.scheme == "https":
            if isinstance(context, ssl.SSLContext):
                self.tls = context
            else:
                self.tls = ssl.create_default_context()
                if context is False:
                    self.tls.check_hostname = False
                    self.tls.verify_mode = ssl.CERT_NONE
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Answer:
        """Send one request and read its whole answer."""
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}", "Accept-Encoding: identity"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        async with self._lock:
            for _attempt in (1, 2):
                reused = self._writer is not None
                try:
                    async with asyncio.timeout(self.timeout):
                        if self._writer is None:
                            await self._connect()
                        return await self._exchange(message, method)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self._drop()
                    if isinstance(exc, TimeoutError):
                        raise
                    # a kept-alive connection the server had closed: ask again on a new one, but
                    # never send a create twice
                    if not (reused and method in IDEMPOTENT):
                        if isinstance(exc, asyncio.IncompleteReadError):
                            raise ConnectionError("the API server closed the connection mid-answer") from exc
                        raise
                except BaseException:
                    self._drop()        # a timeout or cancellation mid-exchange: the connection is unusable
                    raise
        raise ConnectionError("the API server closed the connection twice")  # pragma: no cover

    async def _connect(self) -> None:
        hostname: str | bytes | None = (self.server_hostname or self.host) if self.tls else None
        if isinstance(hostname, str) and hostname.isascii():
            hostname = hostname.encode()    # what ssl's idna codec makes of an ASCII name, without its import
        async with asyncio.timeout(self.connect_timeout):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=MAX_HEADER_LINE, server_hostname=hostname)

    async def _exchange(self, message: bytes, method: str) -> Answer:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(message)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"the server did not answer in HTTP/1.1: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ConnectionError("the server sent too many header lines")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ConnectionError(f"bad Content-Length {length[:20]!r}")
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read()          # until the server closes
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self._drop()
        return Answer(status, headers, body)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size line {size_line[:40]!r}") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass                        # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)         # the CRLF after each chunk

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        """Close the connection, if one is open."""
        writer = self._writer
        self._drop()
        if writer is not None:
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
