"""Webhooks of a task, without I/O: what a task asks to be told, which events happened, their
ids, the CloudEvents body, the Standard Webhooks signature, and which addresses may be called.

- `Notify` (spec.notify): a URL, the events wanted (default: the terminal ones), an optional
  Secret holding the signing key.
- `due_events` reads, from a task's status alone, which events have happened: a restarted
  operator computes the same list with the same ids, so nothing acknowledged is sent again.
- `cloud_event` is the body (CloudEvents 1.0, JSON); `sign` the Standard Webhooks headers.
- `address_problem` and `url_problem` say why a receiver may not be called: loopback,
  link-local, private, CGNAT, unique-local and every other non-global range (also inside an
  IPv4-mapped, NAT64 or 6to4 IPv6 address) are refused unless the allowlist names them. Name
  resolution happens elsewhere (gentask.webhooks.address), where I/O is allowed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from gentask.domain.names import to_camel, to_snake
from gentask.domain.reasons import ConditionType, Phase

if TYPE_CHECKING:       # task.py imports this module for its spec and status fields
    from gentask.domain.task import Condition, GenerationTask, GenerationTaskStatus

URL_MAX = 2048
KEY_PREFIX = "whsec_"
DEFAULT_SECRET_KEY = "signingKey"
CONTENT_TYPE = "application/json"
EVENT_TYPE_PREFIX = "io.gentask.task."
API_PREFIX = "/api/v1/ai"
ERROR_MAX = 1024


class NotifyEvent(str, Enum):  # noqa: UP042 - StrEnum would change what str() of a member prints
    """What a receiver may be told about: the task queued, running, progressing, or its outcome."""

    QUEUED = "queued"
    RUNNING = "running"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def cloud_type(self) -> str:
        """The CloudEvents type: io.gentask.task.<event>."""
        return EVENT_TYPE_PREFIX + self.value


TERMINAL_EVENTS = (NotifyEvent.SUCCEEDED, NotifyEvent.FAILED, NotifyEvent.CANCELLED)
_TERMINAL_OF = {Phase.SUCCEEDED: NotifyEvent.SUCCEEDED, Phase.FAILED: NotifyEvent.FAILED,
                Phase.CANCELLED: NotifyEvent.CANCELLED}


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", alias_generator=to_camel)


class SecretKeyRef(_Model):
    """A key of a Secret in the task's namespace: where the webhook signing key is."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
                      description="the Secret's name (in the task's namespace)")
    key: str = Field(DEFAULT_SECRET_KEY, min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="the key holding whsec_<base64> (several, space-separated, while rotating)")


class Notify(_Model):
    """Where to tell about the task's events (webhooks, signed per Standard Webhooks)."""

    url: str = Field(min_length=1, max_length=URL_MAX, pattern=r"^[hH][tT][tT][pP][sS]?://",
                     description="the receiver: an http(s) URL; private, loopback and link-local addresses are "
                                 "refused unless the operator's GENTASK_WEBHOOK_ALLOW names them")
    events: list[NotifyEvent] = Field(default_factory=lambda: list(TERMINAL_EVENTS), min_length=1, max_length=6,
                                      description="queued | running | progress | succeeded | failed | cancelled "
                                                  "(default: the terminal ones)")
    secret_ref: SecretKeyRef | None = Field(None, description="the signing key; default: the operator's "
                                                              "GENTASK_WEBHOOK_SIGNING_KEY")


class Notification(_Model):
    """Delivery state of one event of a task (status.notifications): written by the operator only."""

    id: str = Field(max_length=64, description="the event id: webhook-id and the CloudEvent's id")
    event: NotifyEvent
    state: Literal["Pending", "Delivered", "Failed"] = Field(
        "Pending", description="Pending: will be (re)tried; Delivered: the receiver answered 2xx; Failed: given up")
    attempts: int = Field(0, ge=0)
    last_attempt_time: datetime | None = None
    next_attempt_time: datetime | None = Field(None, description="when a Pending event is tried again")
    delivered_time: datetime | None = None
    last_error: str | None = Field(None, max_length=ERROR_MAX)


# --- which events happened --------------------------------------------------------------------


@dataclass(frozen=True)
class DueEvent:
    """An event that happened to a task: its id, kind and time (None: no time is recorded for it)."""

    id: str
    event: NotifyEvent
    time: datetime | None


def event_id(uid: str, event: NotifyEvent, transition: str = "") -> str:
    """A stable id of one event of one task: the same on every attempt and after a restart."""
    digest = hashlib.sha256(f"{uid}/{event.value}/{transition}".encode()).hexdigest()[:32]
    return f"evt_{digest}"


def _condition(status: GenerationTaskStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_.value), None)


def progress_message(status: GenerationTaskStatus) -> str | None:
    """The worker's progress note of a running task: a message written after the Running one."""
    if status.phase is not Phase.RUNNING or status.reason != "Started" or not status.message:
        return None
    running = _condition(status, ConditionType.RUNNING)
    if running is None or running.status != "True" or running.message == status.message:
        return None
    return str(status.message)


def due_events(task: GenerationTask) -> list[DueEvent]:
    """The events the task asked for that its status shows happened, in the order they happen.

    From the status alone: queued once a Scheduled condition exists, running once startTime is
    set, the outcome once the phase is terminal, progress while a running task shows a progress
    note (the latest only: a note superseded before it was sent is not sent)."""
    notify = task.spec.notify
    if notify is None:
        return []
    wanted, status, uid = set(notify.events), task.status, task.uid
    out: list[DueEvent] = []
    scheduled = _condition(status, ConditionType.SCHEDULED)
    if NotifyEvent.QUEUED in wanted and scheduled is not None:
        out.append(DueEvent(event_id(uid, NotifyEvent.QUEUED), NotifyEvent.QUEUED, scheduled.last_transition_time))
    if NotifyEvent.RUNNING in wanted and status.start_time is not None:
        out.append(DueEvent(event_id(uid, NotifyEvent.RUNNING), NotifyEvent.RUNNING, status.start_time))
    note = progress_message(status)
    if NotifyEvent.PROGRESS in wanted and note is not None:
        out.append(DueEvent(event_id(uid, NotifyEvent.PROGRESS, note), NotifyEvent.PROGRESS, None))
    outcome = _TERMINAL_OF.get(status.phase) if status.phase is not None else None
    if outcome is not None and outcome in wanted:
        out.append(DueEvent(event_id(uid, outcome), outcome, status.completion_time))
    return out


# --- the body ------------------------------------------------------------------------------------

_OLD_STATUS = {"Pending": "pending", "Queued": "pending", "Running": "processing", "Succeeded": "completed",
               "Failed": "failed", "Cancelled": "cancelled"}


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _link(task_id: str, entry: Mapping[str, Any] | None) -> str | None:
    """The API's download path of a stored file, or None for an entry with no stored file."""
    if not entry or not entry.get("artifact"):
        return None
    return f"{API_PREFIX}/task/{task_id}/artifacts/{posixpath.basename(str(entry['artifact']))}"


def _artifacts(task_id: str, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries: list[tuple[str, Mapping[str, Any]]] = [("image", e) for e in result.get("images") or []]
    if result.get("video"):
        entries.append(("video", result["video"]))
    if result.get("textArtifact"):
        entries.append(("text", result["textArtifact"]))
    return [{"name": posixpath.basename(str(entry["artifact"])), "url": _link(task_id, entry), "kind": kind,
             "mime_type": entry.get("mimeType"), "size_bytes": entry.get("sizeBytes"), "sha256": entry.get("sha256"),
             "source_url": entry.get("url")} for kind, entry in entries if entry.get("artifact")]


_UNITS = ("images", "input_tokens", "output_tokens", "video_seconds", "video_tokens")


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {unit: usage.get(unit) for unit in _UNITS}


def _cost(cost: dict[str, Any]) -> dict[str, Any]:
    """status.cost (Python names) in the REST view's shape (gentask.api.schemas.CostView)."""
    attempts = [{"provider": a["provider"], "model": a["model"], "outcome": a["outcome"], "reason": a.get("reason"),
                 "vendor_task_id": a.get("vendor_task_id"), "usage": _usage(a.get("usage") or {}),
                 "amount": a["amount"], "currency": a["currency"]} for a in cost.get("attempts") or []]
    return {"amount": cost.get("amount"), "currency": cost.get("currency"), "totals": cost.get("totals") or [],
            "attempts": attempts}


def task_data(task: GenerationTask) -> dict[str, Any]:
    """The task in the REST API's shape (the fields of GET /api/v1/ai/task/result/{id}).

    Built here because the operator may not import gentask.api; artifact urls are the API's
    paths (fetch them with an API key)."""
    meta, spec, status = task.metadata, task.spec, task.status
    phase = (status.phase or Phase.PENDING).value
    result = status.result.model_dump(by_alias=True, exclude_none=True, mode="json") if status.result else None
    view = None
    if result:
        image_urls = [u for u in (e.get("url") or _link(task.name, e) for e in result.get("images") or []) if u]
        video = result.get("video")
        view = {"image_url": image_urls[0] if image_urls else None, "image_urls": image_urls,
                "video_url": (video.get("url") or _link(task.name, video)) if video else None,
                "text_result": result.get("text"), "artifacts": _artifacts(task.name, result),
                "usage": result.get("usage") or {}}
    return {
        "task_id": task.name, "user_id": spec.user_id, "type": spec.type.value, "provider": spec.provider,
        "model": spec.model, "prompt": spec.prompt, "priority": spec.priority.value,
        "status": _OLD_STATUS[phase], "phase": phase, "reason": status.reason, "message": status.message or None,
        "error": (status.message or status.reason) if phase == Phase.FAILED.value else None,
        "attempts": status.attempts or 0,
        "served_by": status.served_by.model_dump() if status.served_by is not None else None,
        "params": {to_snake(k): v for k, v in spec.params.model_dump(by_alias=True, exclude_none=True,
                                                                      mode="json").items()},
        "fallbacks": [f.model_dump() for f in spec.fallbacks], "cancel_requested": spec.cancel,
        "result": view,
        "usage": _usage(status.usage.model_dump(exclude_none=True)) if status.usage is not None else None,
        "cost": _cost(status.cost.model_dump(exclude_none=True)) if status.cost is not None else None,
        "created_at": _when(meta.creation_timestamp), "started_at": _when(status.start_time),
        "completed_at": _when(status.completion_time),
    }


def cloud_event(task: GenerationTask, due: DueEvent, now: datetime) -> bytes:
    """The body of one delivery: a CloudEvents 1.0 JSON event whose data is the task."""
    doc = {
        "specversion": "1.0", "id": due.id,
        "source": f"/apis/gentask.io/v1alpha1/namespaces/{task.namespace}/generationtasks",
        "type": due.event.cloud_type, "subject": f"{task.namespace}/{task.name}",
        "time": _when(due.time or now), "datacontenttype": CONTENT_TYPE, "data": task_data(task),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# --- signing (Standard Webhooks) ----------------------------------------------------------------


class SigningKeyError(ValueError):
    """A signing key that is not whsec_<base64>; the message never contains the key."""


def parse_keys(value: str, where: str) -> list[bytes]:
    """The keys of `value`: whsec_<base64>, several space-separated while rotating."""
    keys = []
    for item in value.split():
        if not item.startswith(KEY_PREFIX):
            raise SigningKeyError(f"{where} is not a Standard Webhooks key: expected whsec_<base64>")
        try:
            encoded = item[len(KEY_PREFIX):]
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)   # padding optional
        except (binascii.Error, ValueError):
            raise SigningKeyError(f"{where} is not a Standard Webhooks key: the part after whsec_ is not "
                                  "base64") from None
        if len(key) < 16:
            raise SigningKeyError(f"{where} is too short: a signing key needs at least 16 bytes (24 base64 "
                                  "characters)")
        keys.append(key)
    if not keys:
        raise SigningKeyError(f"{where} is empty: expected whsec_<base64>")
    return keys


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: webhook-id, webhook-timestamp, webhook-signature (v1, one a key)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signatures = [base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode() for k in keys]
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(f"v1,{s}" for s in signatures)}


# --- which receivers may be called --------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAMED: list[tuple[str, Any]] = [
    ("loopback", lambda ip: ip.is_loopback), ("link-local", lambda ip: ip.is_link_local),
    ("unspecified", lambda ip: ip.is_unspecified), ("multicast", lambda ip: ip.is_multicast),
    ("CGNAT shared address space", lambda ip: ip in ipaddress.ip_network("100.64.0.0/10")),
    ("unique-local", lambda ip: ip.version == 6 and ip in ipaddress.ip_network("fc00::/7")),
    ("reserved", lambda ip: ip.is_reserved), ("private", lambda ip: ip.is_private),
]


class CallbackRefused(ValueError):
    """A receiver URL that may not be called: the message says why and what is accepted."""


@dataclass(frozen=True)
class WebhookPolicy:
    """Which receivers may be called: the allowlist (hosts and CIDRs) and whether http is allowed.

    An allowlist entry with a / is a CIDR: any address in it may be called, whatever name led
    there; one without is a host, matched against the URL's host as written (an IP address
    too): `127.0.0.1` allows http://127.0.0.1:8080/, not http://localhost:8080/."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_http: bool = True

    @classmethod
    def parse(cls, entries: Iterable[str], allow_http: bool) -> WebhookPolicy:
        """The policy of GENTASK_WEBHOOK_ALLOW's entries; ValueError naming a bad entry."""
        hosts, networks = set(), []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{raw!r} is not a CIDR such as 10.0.0.0/8 or fd00::/8") from None
            else:
                hosts.add(entry.strip("[]"))
        return cls(frozenset(hosts), tuple(networks), allow_http)

    def host_allowed(self, host: str) -> bool:
        """The URL's host (as written) is on the allowlist."""
        return host.lower().strip("[]") in self.hosts

    @staticmethod
    def describe() -> str:
        """What the allowlist accepts, in words for an error message (its entries are not shown)."""
        return "a host or CIDR the server's GENTASK_WEBHOOK_ALLOW lists"


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, policy: WebhookPolicy) -> str | None:
    """Why this address may not be called (e.g. 'loopback'), or None when it may."""
    if any(ip in net for net in policy.networks if net.version == ip.version):
        return None
    inner = _embedded_v4(ip)
    if inner is not None:
        problem = address_problem(inner, policy)
        return f"{problem} (inside the IPv6 address {ip})" if problem else None
    named = next((name for name, test in _NAMED if test(ip)), None)
    if named is not None:
        return named
    return None if ip.is_global else "not globally routable"


@dataclass(frozen=True)
class CallbackURL:
    """A parsed receiver URL: scheme, host as written, port, and the address when the host is one."""

    url: str
    scheme: str
    host: str
    port: int
    literal: IPAddress | None


def url_problem(url: str, policy: WebhookPolicy, field_name: str = "url") -> CallbackURL:
    """The parsed URL, or CallbackRefused saying what is wrong (its scheme, credentials, a
    literal address that may not be called). Names are resolved and checked elsewhere."""
    accepted = "an http(s) URL of a public receiver, or " + policy.describe()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"{field_name} is not a valid URL ({exc}); expected {accepted}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CallbackRefused(f"{field_name} must be an http or https URL, not {scheme or 'one without a scheme'}")
    host = (parts.hostname or "").lower()
    if not host:
        raise CallbackRefused(f"{field_name} has no host; expected {accepted}")
    try:
        host.encode("idna")     # what name resolution does with it: a name it cannot encode is no host name
    except UnicodeError:
        raise CallbackRefused(f"{field_name} has a host that is not a valid host name ({host!r}); expected "
                              f"{accepted}") from None
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused(f"{field_name} must not carry credentials (user:password@): they would be stored "
                              "in the task; authenticate the receiver by the webhook signature instead")
    allowed_host = policy.host_allowed(host)
    if scheme == "http" and not policy.allow_http and not allowed_host:
        raise CallbackRefused(f"{field_name} must use https (ENVIRONMENT=production); http is accepted only for "
                              f"{policy.describe()} or with GENTASK_WEBHOOK_ALLOW_HTTP=true")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not allowed_host:
        problem = address_problem(literal, policy)
        if problem:
            raise CallbackRefused(f"{field_name} {host} is a {problem} address, which gentask does not call; "
                                  f"accepted: {accepted}")
    return CallbackURL(url, scheme, host, port or (443 if scheme == "https" else 80), literal)


def resolved_problem(target: CallbackURL, addresses: Sequence[IPAddress], policy: WebhookPolicy,
                     field_name: str = "url") -> str | None:
    """Why a name's addresses may not be called (the first refused one), or None."""
    if policy.host_allowed(target.host):
        return None
    for ip in addresses:
        problem = address_problem(ip, policy)
        if problem:
            return (f"{field_name} host {target.host} resolves to {ip}, a {problem} address, which gentask does "
                    f"not call; accepted: a public receiver, or {policy.describe()}")
    return None


def error_text(message: str) -> str:
    """A delivery error cut to what status.notifications keeps."""
    return message if len(message) <= ERROR_MAX else message[: ERROR_MAX - 1] + "…"


__all__ = [
    "DEFAULT_SECRET_KEY", "TERMINAL_EVENTS", "CallbackRefused", "CallbackURL", "DueEvent", "Notification",
    "Notify", "NotifyEvent", "SecretKeyRef", "SigningKeyError", "WebhookPolicy", "address_problem",
    "cloud_event", "due_events", "error_text", "event_id", "parse_keys", "progress_message", "resolved_problem",
    "sign", "task_data", "url_problem",
]
