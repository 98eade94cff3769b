"""A fresh database a test on the session's FerretDB, on the client gentask.storage.connect opens."""

from __future__ import annotations

import uuid

import pytest

from gentask.config import Settings
from gentask.storage import TaskMirror, connect, disconnect


@pytest.fixture
def db(cluster):
    client = connect(Settings(mongo_url=cluster.mongo_url), timeout_ms=5000).client
    database = client[f"t_{uuid.uuid4().hex[:10]}"]
    yield database
    client.drop_database(database.name)


@pytest.fixture(scope="session", autouse=True)
def _close_clients():
    yield
    disconnect()


@pytest.fixture
def mirror(db) -> TaskMirror:
    m = TaskMirror(db)
    m.ensure_indexes()
    return m
