"""Posting one signed event to a receiver, and what the answer means for a retry.

aiohttp, as the operator's Kubernetes client (gentask.kube) already uses: its connector asks a
resolver for a name's addresses, and this one (`PinnedResolver`) answers only with the addresses
gentask.webhooks.address checked just before, so the connection goes to a checked address and
TLS still verifies the receiver's name. No redirects are followed, no proxy from the environment
is used, an attempt takes at most 10 s, and only the first KiB of an answer is read.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from gentask.webhooks.address import Vetted

TIMEOUT = 10.0
ANSWER_READ = 1024
USER_AGENT = "gentask-webhooks/0.1"
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: delivered (2xx), or an error, retryable or not, with Retry-After."""

    delivered: bool
    result: str                     # for metrics: 2xx, 3xx, 4xx, 5xx, 429, timeout, connection
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None


class PinnedResolver(AbstractResolver):
    """Answers with the addresses checked for a host, and never looks a name up itself."""

    def __init__(self) -> None:
        self.pins: dict[str, tuple[Any, ...]] = {}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        """The checked addresses of `host`; OSError for a host that was not checked."""
        addresses = self.pins.get(host.lower().rstrip("."))
        if not addresses:
            raise OSError(f"{host} was not checked before connecting")
        return [ResolveResult(hostname=host, host=str(ip), port=port,
                              family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for ip in addresses]

    async def close(self) -> None:
        """Nothing to close."""


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WebhookSender:
    """One aiohttp session for every delivery; make it inside the running loop, close it at the end."""

    def __init__(self, limit: int = 32) -> None:
        self.resolver = PinnedResolver()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self.resolver, use_dns_cache=False, limit=limit,
                                           keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT), trust_env=False,
            headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        """Close the session and its connections."""
        await self.session.close()

    async def send(self, vetted: Vetted, headers: dict[str, str], body: bytes) -> Outcome:
        """POST the body to the checked addresses of the receiver; what came of it."""
        target = vetted.target
        if target.literal is None:
            self.resolver.pins[target.host.rstrip(".")] = vetted.addresses
        try:
            async with self.session.post(target.url, data=body, allow_redirects=False,
                                         headers={**headers, "Content-Type": "application/json"}) as answer:
                await answer.content.read(ANSWER_READ)
                status = answer.status
                after = retry_after(answer.headers.get("Retry-After"))
        except TimeoutError:
            return Outcome(False, "timeout", f"no answer within {TIMEOUT:.0f} s", retryable=True)
        except aiohttp.ClientConnectorError as exc:
            return Outcome(False, "connection", f"could not connect: {exc.os_error or exc}", retryable=True)
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, "connection", f"the connection failed: {type(exc).__name__}: {exc}",
                           retryable=True)
        except asyncio.CancelledError:
            raise
        if 200 <= status < 300:
            return Outcome(True, "2xx")
        klass = "429" if status == 429 else f"{status // 100}xx"
        retryable = status in RETRYABLE_STATUSES
        hint = "" if retryable else " (not retried: only timeouts, connection errors, 5xx and 429 are)"
        if 300 <= status < 400:
            hint = " (a redirect, which gentask does not follow; not retried)"
        return Outcome(False, klass, f"the receiver answered HTTP {status}{hint}", retryable=retryable,
                       retry_after=after if retryable else None)


__all__ = ["Outcome", "PinnedResolver", "WebhookSender", "retry_after"]
