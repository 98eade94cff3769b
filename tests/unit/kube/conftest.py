"""A real HTTP(S) server on 127.0.0.1 that plays the API server's part, and certificates for it."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devcluster.pki import write_pki

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Pki:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def client_cert(self, common_name: str) -> tuple[bytes, bytes]:
        """A client certificate signed by the CA: (cert PEM, key PEM)."""
        ca_key = serialization.load_pem_private_key((self.folder / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.folder / "apiserver.crt", self.folder / "apiserver.key")
        if require_client_cert:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    write_pki(folder)
    return Pki(folder)


@dataclass
class FakeApiServer:
    """Routes by (method, path); every request is recorded with its headers."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[web.Request] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"kind": "Status", "status": "Failure", "reason": "NotFound",
                                      "message": f"no route {request.method} {request.path}", "code": 404},
                                     status=404)
        return await handler(request)


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Awaitable[FakeApiServer]]]:
    runners: list[web.AppRunner] = []

    async def start(tls: ssl.SSLContext | None = None) -> FakeApiServer:
        server = FakeApiServer()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()
