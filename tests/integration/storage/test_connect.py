"""connect(): one client a process, a short server-selection timeout, errors without the password."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from gentask.config import Settings
from gentask.storage import ArtifactStore, StorageUnavailable, TaskMirror, connect

PASSWORD = "s3cr3t-Pa55word"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_without_the_password(caplog):
    port = _closed_port()
    db = connect(Settings(mongo_url=f"mongodb://gentask:{PASSWORD}@127.0.0.1:{port}/gentask?authSource=admin"),
                 timeout_ms=300)
    for operation in (lambda: TaskMirror(db, serialize_writes=False).get("some-uid"),
                      lambda: TaskMirror(db, serialize_writes=False).list(user_id="u"),
                      lambda: ArtifactStore(db).open("u/1/image-0.png")):
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageUnavailable) as err:
            operation()
        assert time.monotonic() - started < 3
        message = str(err.value)
        assert f"127.0.0.1:{port}" in message and "unavailable" in message
        assert PASSWORD not in message and PASSWORD not in repr(err.value.__cause__)
        assert PASSWORD not in caplog.text


def test_check_pings_the_server_now():
    with pytest.raises(StorageUnavailable, match="pinging the server"):
        connect(Settings(mongo_url=f"mongodb://127.0.0.1:{_closed_port()}/gentask"), timeout_ms=200, check=True)


def test_one_client_per_process_named_gentask(cluster):
    settings = Settings(mongo_url=cluster.mongo_url)
    first, second = connect(settings, check=True), connect(settings)
    assert first.client is second.client
    assert first.name == "gentask"
    assert first.client.options.pool_options.metadata["application"]["name"] == "gentask"
    assert first.client.options.server_selection_timeout == 2.0


def test_the_url_may_set_its_own_timeout(cluster):
    db = connect(Settings(mongo_url=f"{cluster.mongo_url}?serverSelectionTimeoutMS=750"))
    assert db.client.options.server_selection_timeout == 0.75
    assert db.command("ping")["ok"] == 1.0


def test_an_unusable_url_is_refused_without_its_password():
    with pytest.raises(ValueError) as err:
        connect(Settings(mongo_url=f"mongodb://gentask:{PASSWORD}@h1:1,h2:2/gentask?directConnection=true"))
    assert "directConnection" in str(err.value)
    assert PASSWORD not in str(err.value) and "gentask:***@h1:1,h2:2" in str(err.value)
