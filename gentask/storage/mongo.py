"""The MongoDB connection: one client per process, and one exception for "MongoDB is not there".

The only module (with the rest of gentask.storage) that imports pymongo. Errors that mean the
server cannot be reached or refused us become StorageUnavailable, whose text names the hosts and
the cause but never the URL's password.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, ConnectionFailure, OperationFailure

if TYPE_CHECKING:
    from gentask.config import Settings

APPNAME = "gentask"
DEFAULT_TIMEOUT_MS = 2000
_AUTH_FAILED = 18
_DETAIL_MAX = 400

_clients: dict[tuple[int, str, int], pymongo.MongoClient[Any]] = {}
_secrets: set[str] = set()
_lock = threading.Lock()


class StorageUnavailable(RuntimeError):
    """MongoDB could not be reached (or refused our credentials); the operation did not happen."""


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def _timeout_in_url(url: str) -> bool:
    query = urlsplit(url).query
    return any(key.lower() == "serverselectiontimeoutms" for key, _ in parse_qsl(query))


def _hosts(client: pymongo.MongoClient[Any] | None) -> str:
    if client is None:
        return "MongoDB"
    try:
        servers = client.topology_description.server_descriptions()
        return ", ".join(f"{host}:{port}" for host, port in servers) or "MongoDB"
    except Exception:  # noqa: BLE001 - describing the error must never raise another
        return "MongoDB"


@contextlib.contextmanager
def translate_errors(client: pymongo.MongoClient[Any] | None, doing: str) -> Iterator[None]:
    """Turn pymongo's connection, timeout and authentication errors into StorageUnavailable."""
    try:
        yield
    except ConnectionFailure as exc:  # ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout
        detail = _scrub(str(exc))[:_DETAIL_MAX]
        raise StorageUnavailable(
            f"MongoDB at {_hosts(client)} is unavailable while {doing} ({type(exc).__name__}): {detail}"
        ) from None
    except OperationFailure as exc:
        if exc.code != _AUTH_FAILED:
            raise
        raise StorageUnavailable(
            f"MongoDB at {_hosts(client)} refused the credentials of MONGO_URL while {doing}"
        ) from None


def connect(settings: Settings, *, timeout_ms: int | None = None, check: bool = False) -> Database[Any]:
    """The database named by settings.mongo_url, on this process's one client for that URL.

    Server selection waits `timeout_ms` (default 2000 ms, or the URL's own
    serverSelectionTimeoutMS) before an operation fails with StorageUnavailable. The client
    connects lazily; `check=True` pings the server now and raises StorageUnavailable if it is not
    there.
    """
    url = settings.mongo_url
    if timeout_ms is not None and not (isinstance(timeout_ms, int) and 1 <= timeout_ms <= 600_000):
        raise ValueError(f"timeout_ms must be an integer between 1 and 600000 milliseconds, got {timeout_ms!r}")
    options: dict[str, Any] = {"appname": APPNAME, "tz_aware": True}
    selection_ms = 0
    if timeout_ms is not None or not _timeout_in_url(url):
        selection_ms = timeout_ms or DEFAULT_TIMEOUT_MS
        options["serverSelectionTimeoutMS"] = selection_ms
        options["connectTimeoutMS"] = selection_ms
    key = (os.getpid(), url, selection_ms)
    with _lock:
        client = _clients.get(key)
        if client is None:
            password = urlsplit(url).password
            if password:
                _secrets.update({password, unquote(password)})
            try:
                client = pymongo.MongoClient(url, **options)
            except ConfigurationError as exc:
                raise ValueError(f"MONGO_URL {redact_url(url)} is not usable: {_scrub(str(exc))}") from None
            _clients[key] = client
    db = client[settings.mongo_database]
    if check:
        with translate_errors(client, "pinging the server"):
            db.command("ping")
    return db


def disconnect() -> None:
    """Close every client connect() opened in this process (at shutdown, or between tests)."""
    with _lock:
        clients = [c for (pid, *_), c in _clients.items() if pid == os.getpid()]
        _clients.clear()
    for client in clients:
        client.close()


def is_ferretdb(db: Database[Any]) -> bool:
    """True when the server is FerretDB (its buildInfo says so)."""
    with translate_errors(db.client, "reading buildInfo"):
        return "ferretdbVersion" in db.client.admin.command("buildInfo")
