"""The local cluster's MongoDB is FerretDB over a real PostgreSQL: documents are PostgreSQL rows,
`down` stops PostgreSQL by PID and removes its data, and a PostgreSQL that is missing or cannot
start fails `up` with a message that says what to do."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pymongo
import pytest

from devcluster import ClusterError, DevCluster, postgres
from devcluster.cluster import pid_alive
from tests.integration.conftest import wait_for


@pytest.fixture
def own_root():
    """A cluster folder of this test's own, always brought down. Not under pytest's tmp_path: that is
    private to root (0700), and when the tests run as root PostgreSQL runs as an unprivileged user."""
    parent = Path(tempfile.mkdtemp(prefix="gentask-pg-", dir="/tmp"))
    parent.chmod(0o755)
    root = parent / "cluster"
    try:
        yield root
    finally:
        DevCluster(root, log=lambda *_: None).down(quiet=True)
        shutil.rmtree(parent, ignore_errors=True)


def _postgres_processes(root: Path) -> list[int]:
    """Every process that is a postmaster of a data folder under root, or a PostgreSQL process
    (backend, checkpointer, ...) working in one."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        data = args[args.index("-D") + 1] if "-D" in args[:-1] else ""
        postmaster = Path(args[0]).name == "postgres" and data.startswith(str(root))
        worker = args[0].startswith("postgres:") and cwd.startswith(str(root))
        if postmaster or worker:
            found.append(int(proc.name))
    return found


def test_a_mongodb_document_is_a_row_in_postgresql(cluster):
    pg = postgres.connection(cluster.kubeconfig.parent)
    if pg is None:
        pytest.skip("the cluster under test is not a local cluster with its own PostgreSQL")
    assert pg.psql("SELECT current_setting('server_version_num')::int / 10000").strip() == pg.bin.parent.name
    dbname, marker = f"rows_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client = pymongo.MongoClient(cluster.mongo_url.rsplit("/", 1)[0] + f"/{dbname}", serverSelectionTimeoutMS=10_000)
    try:
        client[dbname].tasks.insert_one({"_id": "task-1", "marker": marker, "phase": "Running"})
        # FerretDB keeps a MongoDB database as a PostgreSQL schema, a collection as a table of _jsonb rows
        table = pg.psql(f"SELECT _jsonb->>'table' FROM \"{dbname}\"._ferretdb_database_metadata "
                        "WHERE _jsonb->>'_id' = 'tasks'").strip()
        assert table.startswith("tasks_")
        rows = f'SELECT _jsonb->>\'_id\', _jsonb->>\'marker\', _jsonb->>\'phase\' FROM "{dbname}"."{table}"'
        assert pg.psql(rows).split() == [f"task-1|{marker}|Running"]
        client[dbname].tasks.update_one({"_id": "task-1"}, {"$set": {"phase": "Succeeded"}})
        assert pg.psql(rows).split() == [f"task-1|{marker}|Succeeded"]
    finally:
        client.drop_database(dbname)
        client.close()
    assert pg.psql(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{dbname}'").strip() == "0"


def test_down_stops_postgresql_by_pid_and_removes_its_data(own_root):
    dev = DevCluster(own_root, log=lambda *_: None)
    state = dev.up(timeout=180)
    pid = state.pids["postgres"]
    pg = postgres.connection(own_root)
    assert pg is not None and pg.pid == pid                      # the recorded PID is the postmaster's
    assert f"--postgresql-url={pg.url}" in state.argv["ferretdb"]
    assert pid in _postgres_processes(own_root)
    if os.geteuid() == 0:                                        # PostgreSQL refuses root
        assert (own_root / "postgres").stat().st_uid != 0

    # the fault drill: FerretDB stops and starts again on the same port, PostgreSQL keeps the data
    mongo = pymongo.MongoClient(state.mongo_url, serverSelectionTimeoutMS=10_000)
    try:
        mongo.gentask.drill.insert_one({"_id": "kept", "n": 1})
        dev.stop_component("ferretdb")
        with pytest.raises(pymongo.errors.PyMongoError):
            pymongo.MongoClient(state.mongo_url, serverSelectionTimeoutMS=500).gentask.drill.find_one({})
        dev.start_component("ferretdb")
        assert wait_for(lambda: _find(mongo, {"_id": "kept"}), 30, what="the document after FerretDB's restart") == {
            "_id": "kept", "n": 1}
    finally:
        mongo.close()
    assert postgres.connection(own_root).pid == pid              # PostgreSQL ran through the drill

    stopped = dev.down(quiet=True)
    assert "postgres" in stopped and "ferretdb" in stopped
    assert not pid_alive(pid)
    assert _postgres_processes(own_root) == []
    assert not (own_root / "postgres").exists()
    assert postgres.connection(own_root) is None


def _find(client: pymongo.MongoClient, query: dict) -> dict | None:
    try:
        return client.gentask.drill.find_one(query)
    except pymongo.errors.PyMongoError:
        return None


def test_up_without_postgresql_names_the_package_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "DEBIAN_LIB", tmp_path / "no-postgresql-here")
    dev = DevCluster(tmp_path / "cluster", log=lambda *_: None)
    with pytest.raises(ClusterError, match=r"PostgreSQL is not installed.*Debian package `postgresql`.*make tools"):
        dev.up(timeout=30)
    assert dev.state() is None and not (tmp_path / "cluster" / "logs").exists()

    monkeypatch.setenv(postgres.BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match=rf"{postgres.BIN_ENV}=.*missing has no initdb.*make tools"):
        dev.up(timeout=30)
    assert dev.state() is None


def test_a_postgresql_that_fails_to_start_fails_up_clearly_and_leaves_nothing(own_root, monkeypatch):
    bin_dir = own_root.parent / "bin"
    bin_dir.mkdir()
    for name in postgres.BINARIES:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho '{name}: simulated failure' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv(postgres.BIN_ENV, str(bin_dir))
    dev = DevCluster(own_root, log=lambda *_: None)
    with pytest.raises(ClusterError, match=r"postgres exited during start-up:(.|\n)*initdb: simulated failure"):
        dev.up(timeout=60)
    assert dev.state() is None                                   # up brought the rest down again
    assert not (own_root / "postgres").exists() and not (own_root / "etcd").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_a_folder_postgresql_cannot_enter_is_refused_before_anything_starts(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    dev = DevCluster(private / "cluster", log=lambda *_: None)
    with pytest.raises(ClusterError, match=rf"runs as user \w+ .*cannot enter {private} \(mode drwx------"):
        dev.up(timeout=30)
    assert dev.state() is None
