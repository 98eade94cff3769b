"""The one HTTP path of every vendor client: httpx, one timeout, errors mapped, secrets scrubbed.

httpx does no retries of its own here (a plain AsyncClient never retries a request), so the
runner's retry loop is the only one.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import httpx

from gentask.providers.errors import ProviderError, ProviderTimeoutError, UnreachableError, redact

log = logging.getLogger("gentask.providers")

ErrorParser = Callable[[int | None, Any, Mapping[str, str]], ProviderError]
USER_AGENT = "gentask/0.1"


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: building one costs tens of milliseconds."""
    return ssl.create_default_context()


def parse_json(response: httpx.Response) -> Any:
    """The response's JSON body (untyped vendor data), or {} when it is not JSON: errors still map."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


class VendorHTTP:
    """An httpx.AsyncClient for one vendor API; `send` returns a 2xx response or raises ProviderError."""

    def __init__(self, *, provider: str, base_url: str, timeout: float, secrets: Iterable[str],
                 parse_error: ErrorParser, headers: Mapping[str, str] | None = None) -> None:
        self.provider = provider
        self.timeout = timeout
        self._secrets = [s for s in secrets if s]
        self._parse_error = parse_error
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, **(headers or {})}, follow_redirects=False, verify=_tls(),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))

    @property
    def base_url(self) -> httpx.URL:
        """The vendor's base URL, which Visual's signer needs (host and path)."""
        return self._client.base_url

    def error(self, status: int | None, body: Any, headers: Mapping[str, str], model: str | None) -> ProviderError:
        """The vendor's error body as a ProviderError of the taxonomy, secrets redacted, provider and model set."""
        err = self._parse_error(status, body, headers)
        err.message = redact(err.message, self._secrets)
        err.args = (err.message,)
        err.provider, err.model = self.provider, model
        return err

    async def send(self, method: str, path: str, *, model: str | None = None, **kwargs: Any) -> httpx.Response:
        """One request; a timeout, a transport failure or a 4xx/5xx becomes a ProviderError."""
        started = time.monotonic()
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ProviderTimeoutError(f"{self.provider} did not answer within {self.timeout:g}s (AI_TIMEOUT)",
                                       provider=self.provider, model=model) from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"cannot reach {self.provider} at {self._client.base_url.host}: "
                                   f"{type(exc).__name__}", provider=self.provider, model=model) from None
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        log.debug("vendor call", extra={"provider": self.provider, "model": model, "method": method,
                                        "path": path, "status": response.status_code, "elapsed_ms": elapsed_ms})
        if response.status_code >= 400:
            raise self.error(response.status_code, parse_json(response), response.headers, model)
        return response

    async def aclose(self) -> None:
        """Close the client's pooled connections."""
        await self._client.aclose()
