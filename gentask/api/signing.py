"""Signed artifact links: absolute URLs that open a stored file without any header, until they expire.

A link is the artifact route, `{base}/api/v1/ai/task/{task_id}/artifacts/{name}`, with three query
parameters: `uid` (the task's uid: a link made for one task never opens a later task that
reuses its name), `expires` (Unix seconds) and `signature`, the HMAC-SHA256 of

    v1 \\n uid \\n task_id \\n name \\n expires

under a server key, in unpadded base64url. GENTASK_API_LINK_KEYS holds the keys: the first signs,
every one verifies, so a new key can go first while links signed with the old one still work
(docs/helm.md, "Rotating the link keys"). Without a key the signer makes one at start: links then
work on this process only, and die with it (app.py warns).

The base is GENTASK_API_PUBLIC_URL, else the base URL of the request that asked for the result
(its Host header, and its scheme as uvicorn's proxy-headers handling gives it).

Expiries are rounded up to a whole minute, so a page that polls a result gets the same link (and
its browser's cache) for a minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from gentask.api.errors import Forbidden
from gentask.api.schemas import TaskView
from gentask.api.views import API_PREFIX
from gentask.config import Settings

VERSION = "v1"
ROUND_SECONDS = 60
EXPIRES_DIGITS_MAX = 12


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LinkSigner:
    """Signs and verifies artifact links with HMAC-SHA256 keys; the first key signs."""

    def __init__(self, keys: Sequence[str | bytes], seconds: int, public_url: str | None = None) -> None:
        self.ephemeral = not keys
        made = [secrets.token_bytes(32)] if self.ephemeral else []
        self._keys = [k.encode() if isinstance(k, str) else bytes(k) for k in keys] or made
        self.seconds = seconds
        self.public_url = public_url.rstrip("/") if public_url else None

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        """The signer of GENTASK_API_LINK_KEYS, GENTASK_API_LINK_SECONDS and GENTASK_API_PUBLIC_URL."""
        return cls(settings.link_keys, settings.api_link_seconds, settings.api_public_url)

    def __repr__(self) -> str:            # never the keys
        return f"LinkSigner(keys={len(self._keys)}, seconds={self.seconds}, ephemeral={self.ephemeral})"

    # --- signing --------------------------------------------------------------------------

    def expiry(self, now: float | None = None) -> int:
        """When a link made now expires: GENTASK_API_LINK_SECONDS ahead, rounded up to a whole minute."""
        at = (time.time() if now is None else now) + self.seconds
        return math.ceil(at / ROUND_SECONDS) * ROUND_SECONDS

    @staticmethod
    def _mac(key: bytes, uid: str, task_id: str, name: str, expires: str) -> bytes:
        message = "\n".join((VERSION, uid, task_id, name, expires)).encode()
        return hmac.new(key, message, hashlib.sha256).digest()

    def signature(self, uid: str, task_id: str, name: str, expires: int) -> str:
        """The signature of a link to `name` of the task (`task_id`, `uid`) valid until `expires`."""
        return _b64(self._mac(self._keys[0], uid, task_id, name, str(expires)))

    def path(self, task_id: str, name: str) -> str:
        """The artifact route of a file: /api/v1/ai/task/{task_id}/artifacts/{name}."""
        return f"{API_PREFIX}/task/{quote(task_id, safe='')}/artifacts/{quote(name, safe='')}"

    def link(self, base: str, task_id: str, uid: str, name: str, expires: int | None = None) -> str:
        """The absolute signed link; `base` is used when no GENTASK_API_PUBLIC_URL is set."""
        expires = self.expiry() if expires is None else expires
        query = urlencode({"uid": uid, "expires": expires, "signature": self.signature(uid, task_id, name, expires)})
        return f"{self.public_url or base.rstrip('/')}{self.path(task_id, name)}?{query}"

    def apply(self, view: TaskView, base: str, now: float | None = None) -> TaskView:
        """The view with every artifact link made absolute and signed (the view itself is not changed)."""
        result = view.result
        if result is None or not result.artifacts:
            return view
        expires = self.expiry(now)
        signed = {a.url: self.link(base, view.task_id, view.uid, a.name, expires) for a in result.artifacts}

        def swap(url: str | None) -> str | None:
            return signed.get(url, url) if url else url
        result = result.model_copy(update={
            "artifacts": [a.model_copy(update={"url": signed[a.url]}) for a in result.artifacts],
            "image_url": swap(result.image_url), "image_urls": [swap(u) or u for u in result.image_urls],
            "video_url": swap(result.video_url)})
        return view.model_copy(update={"result": result, "image_url": swap(view.image_url),
                                       "video_url": swap(view.video_url)})

    # --- verifying ------------------------------------------------------------------------

    def verify(self, task_id: str, name: str, uid: str | None, expires: str | None, signature: str | None,
               now: float | None = None) -> int:
        """The link's expiry if its signature matches and it has not expired; Forbidden (403) otherwise."""
        if not uid or not expires or not signature:
            missing = ", ".join(p for p, v in (("uid", uid), ("expires", expires), ("signature", signature)) if not v)
            raise Forbidden(f"this signed link is incomplete: it lacks {missing}; a signed link carries uid, "
                            "expires and signature, exactly as the task's result gave it")
        if not expires.isascii() or not expires.isdigit() or len(expires) > EXPIRES_DIGITS_MAX:
            raise Forbidden("this signed link's expires is not a Unix time in whole seconds; use the link exactly "
                            "as the task's result gave it")
        given = signature.encode("utf-8", errors="replace")
        if not any(hmac.compare_digest(_b64(self._mac(key, uid, task_id, name, expires)).encode(), given)
                   for key in self._keys):
            raise Forbidden("the link's signature does not match its task, file and expiry: the link was altered "
                            "or its key is no longer configured; read the task's result again for a fresh link")
        until = int(expires)
        if until <= (time.time() if now is None else now):
            raise Forbidden(f"this link expired at {_when(until)}; read the task's result again "
                            f"(GET {API_PREFIX}/task/result/{task_id}) for a fresh link")
        return until
