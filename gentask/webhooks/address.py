"""One check of a receiver URL, for the REST API at create time and the operator before each send.

The URL is parsed and checked as written (gentask.domain.webhooks.url_problem); a name is then
resolved once (the event loop's getaddrinfo) and every address it gives is checked. A name that
does not exist is refused; one that cannot be resolved now (a DNS outage) is reported as
`Unresolved`, which a caller may accept and check again later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from gentask.config import Settings
from gentask.domain.webhooks import (
    CallbackRefused,
    CallbackURL,
    IPAddress,
    WebhookPolicy,
    resolved_problem,
    url_problem,
)

RESOLVE_TIMEOUT = 5.0


class Unresolved(Exception):
    """The receiver's name could not be resolved now (temporary): check again before sending."""


@dataclass(frozen=True)
class Vetted:
    """A receiver that may be called, and the addresses that were checked: the only ones to connect to."""

    target: CallbackURL
    addresses: tuple[IPAddress, ...]


def policy_of(settings: Settings) -> WebhookPolicy:
    """The settings' receiver policy: GENTASK_WEBHOOK_ALLOW and whether http is accepted."""
    return WebhookPolicy.parse(settings.webhook_allow, allow_http=settings.webhooks_allow_http)


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to, once; CallbackRefused when the name does not exist."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise CallbackRefused(f"the host {host} does not resolve (no such name)") from None
        raise Unresolved(f"the host {host} could not be resolved now: {exc.strerror or exc}") from None
    except TimeoutError:
        raise Unresolved(f"the host {host} could not be resolved within {RESOLVE_TIMEOUT:.0f} s") from None
    seen: dict[IPAddress, None] = {}
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]          # an IPv6 scope id is not part of the address
        seen[ipaddress.ip_address(address)] = None
    if not seen:
        raise Unresolved(f"the host {host} resolved to no address")
    return tuple(seen)


async def vet(url: str, policy: WebhookPolicy, field_name: str = "url") -> Vetted:
    """The receiver and its checked addresses; CallbackRefused saying why it may not be called,
    Unresolved when its name cannot be resolved now."""
    target = url_problem(url, policy, field_name)
    if target.literal is not None:
        return Vetted(target, (target.literal,))
    try:
        addresses = await resolve(target.host, target.port)
    except CallbackRefused as exc:
        raise CallbackRefused(f"{field_name}: {exc}") from None
    problem = resolved_problem(target, addresses, policy, field_name)
    if problem:
        raise CallbackRefused(problem)
    return Vetted(target, addresses)


__all__ = ["CallbackRefused", "Unresolved", "Vetted", "policy_of", "resolve", "vet"]
