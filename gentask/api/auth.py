"""API keys and callers: who is asking, and may they see this task.

GENTASK_API_KEYS holds comma-separated `key:user[:role][:namespace=NS]` entries (role `user`, the
default, or `admin`; namespace: where the key's tasks live, default GENTASK_NAMESPACE). A caller
acts in its key's namespace only, an admin too: it may act for any user there, never elsewhere.
Keys are kept only as SHA-256 digests after parsing, so a lookup never compares the
secret itself and nothing printable of a key stays in memory beyond the settings object.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ROLES = ("user", "admin")
NAMESPACE_FIELD = "namespace="
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Caller:
    """The authenticated user; with authentication off, an anonymous admin."""

    user_id: str | None
    role: str = "user"
    namespace: str | None = None        # the key's namespace; None: GENTASK_NAMESPACE

    @property
    def admin(self) -> bool:
        """The caller may act for every user."""
        return self.role == "admin"

    @property
    def anonymous(self) -> bool:
        """Authentication is off: nobody in particular asks."""
        return self.user_id is None

    @property
    def limit_key(self) -> str:
        """What the per-user rate limit counts by."""
        return self.user_id if self.user_id is not None else "-anonymous-"


ANONYMOUS = Caller(None, "admin")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Maps presented API keys to callers."""

    def __init__(self, entries: dict[str, Caller]) -> None:
        self._by_digest = entries

    def __len__(self) -> int:
        return len(self._by_digest)

    def namespaces(self) -> set[str]:
        """The namespaces the keys name (besides GENTASK_NAMESPACE, where the others' tasks live)."""
        return {c.namespace for c in self._by_digest.values() if c.namespace}

    def lookup(self, key: str) -> Caller | None:
        """The caller whose key this is, or None."""
        return self._by_digest.get(_digest(key)) if key else None

    @classmethod
    def parse(cls, text: str | None) -> KeyRing:
        """Parse `key:user[:role][:namespace=NS],...`; a bad entry raises ValueError naming its position,
        never the key."""
        entries: dict[str, Caller] = {}
        for position, item in enumerate((text or "").split(","), start=1):
            item = item.strip()
            if not item:
                continue
            parts = item.split(":")
            namespace = None
            if len(parts) >= 3 and parts[-1].startswith(NAMESPACE_FIELD):
                namespace = parts.pop()[len(NAMESPACE_FIELD):]
                if not _NAMESPACE.match(namespace):
                    raise ValueError(f"GENTASK_API_KEYS entry {position}: namespace={namespace!r} is not a namespace "
                                     "name (lower-case letters, digits and '-', at most 63)")
            if len(parts) >= 3 and parts[-1] in ROLES:
                key, user, role = parts[0], ":".join(parts[1:-1]), parts[-1]
            else:
                key, user, role = parts[0], ":".join(parts[1:]), "user"
            if not key or not user:
                raise ValueError(f"GENTASK_API_KEYS entry {position}: expected key:user[:role][:namespace=NS] "
                                 f"with role {' or '.join(ROLES)}")
            entries[_digest(key)] = Caller(user, role, namespace)
        return cls(entries)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
