"""PostgreSQL for the local cluster: the database FerretDB keeps MongoDB's documents in.

Debian's ``postgresql`` package provides the binaries (the newest ``/usr/lib/postgresql/*/bin``,
or the folder ``GENTASK_POSTGRES_BIN`` names). Every ``up`` makes a new, throwaway instance:
``initdb`` into ``<root>/postgres``, tuned for speed, not durability (fsync, synchronous_commit
and full_page_writes off), listening on 127.0.0.1 on a free port and on a unix socket in that
same folder, trust authentication for loopback and the socket only, the database ``ferretdb``
created for FerretDB with GIN twins of FerretDB's indexes (GIN_TWINS, below). It logs to ``<root>/logs/postgres.log``.

PostgreSQL refuses to run as root: a cluster started by root runs it (initdb included) as the
``postgres`` system user the Debian package creates, else as ``nobody``, which then owns the data
folder. The PID the cluster records is the postmaster's, so ``down`` stops it like the others.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.cluster import ClusterError, pid_alive

if TYPE_CHECKING:
    from devcluster.cluster import DevCluster, State

PACKAGE = "postgresql"
BIN_ENV = "GENTASK_POSTGRES_BIN"
DEBIAN_LIB = Path("/usr/lib/postgresql")  # one folder a major version: 15/bin, 16/bin, ...
BINARIES = ("initdb", "postgres", "psql")
SUPERUSER = "postgres"
DATABASE = "ferretdb"
DATA = "postgres"  # the folder under the cluster root; also the unix socket's folder
RUN_AS = ("postgres", "nobody")  # when the cluster runs as root, the first of these that exists
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL

# A throwaway development database: speed over durability (the data is removed at every down).
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "64MB",
    "dynamic_shared_memory_type": "mmap",  # segments live in the data folder: nothing left in /dev/shm
    "jit": "off",  # steady latency: no LLVM compilation of large scans
    # FerretDB runs every query as a prepared statement; PostgreSQL switches such a statement to a
    # generic plan after five runs, made from the table's statistics then. A collection made minutes
    # ago (a test's, a benchmark's) had none, so its reads by _id stayed sequential scans however big
    # it grew until autovacuum's first ANALYZE: 1,000 rows read a lookup, 9.1 ms of PostgreSQL's CPU
    # a task in bench/operator.py's inline run, 3.5 ms with a plan made for each run.
    "plan_cache_mode": "force_custom_plan",
}


# FerretDB v1 pushes a query's equality filters down as JSONB containment (`_jsonb->'f' @> '"v"'`),
# which the btree indexes it makes of a collection's indexes (on `_jsonb->'f'`, and its unique one
# on `_jsonb->'_id'`) cannot serve: every find, even by _id, scans the table. This event trigger
# gives each of those btree indexes a GIN twin on its first field, which serves `@>`
# (https://github.com/FerretDB/FerretDB/issues/4646): a deploy-time step of the database, made
# once, before FerretDB creates its collections; FerretDB and its clients see no difference.
# fastupdate = off: with GIN's default pending list, new rows wait (up to 4 MB of them) in an
# unindexed list that every lookup reads from end to end until a vacuum merges it: after 100,000
# inserts a read by _id took 5.0 ms at p50, 1.6 ms once the list was merged.
GIN_TWINS = r"""
CREATE OR REPLACE FUNCTION gentask_gin_twins() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE
  cmd record;
  tbl regclass;
  expr text;
BEGIN
  FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'index' LOOP
    SELECT i.indrelid::regclass, pg_get_indexdef(i.indexrelid, 1, true) INTO tbl, expr
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
     WHERE i.indexrelid = cmd.objid AND am.amname = 'btree';
    CONTINUE WHEN expr IS NULL OR expr !~ '^\(?_jsonb -> ''[^'']+''::text\)?$';
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((%s) jsonb_path_ops) WITH (fastupdate = off)',
                   left((SELECT relname FROM pg_class WHERE oid = tbl), 40) || '_' || left(md5(expr), 8) || '_gin',
                   tbl, expr);
  END LOOP;
END
$fn$;
CREATE EVENT TRIGGER gentask_gin_twins ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION gentask_gin_twins();
"""


def bin_dir() -> Path:
    """The folder with initdb, postgres and psql: $GENTASK_POSTGRES_BIN, else the newest Debian one."""
    override = os.environ.get(BIN_ENV)
    if override:
        folder = Path(override)
        missing = [b for b in BINARIES if not (folder / b).is_file()]
        if missing:
            raise ClusterError(f"PostgreSQL: {BIN_ENV}={override} has no {', '.join(missing)}; unset it to use "
                               f"the Debian package `{PACKAGE}` (installed by `make tools`)")
        return folder

    def major(path: Path) -> tuple[int, str]:
        name = path.parent.name
        return (int(name), name) if name.isdigit() else (-1, name)

    for folder in sorted(DEBIAN_LIB.glob("*/bin"), key=major, reverse=True):
        if all((folder / b).is_file() for b in BINARIES):
            return folder
    raise ClusterError(f"PostgreSQL is not installed (no {', '.join(BINARIES)} under {DEBIAN_LIB}/*/bin): "
                       f"install the Debian package `{PACKAGE}` with `make tools` "
                       f"(hack/system-packages.sh {PACKAGE})")


def run_as() -> pwd.struct_passwd | None:
    """The unprivileged user PostgreSQL runs as when the cluster runs as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ClusterError(f"PostgreSQL cannot run as root and none of the users {', '.join(RUN_AS)} exists")


def _check_reachable(folder: Path, user: pwd.struct_passwd | None) -> None:
    """Fail early, and clearly, when the user PostgreSQL runs as cannot enter the cluster folder."""
    if user is None:
        return
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for path in [folder, *folder.parents]:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # made by up, with the umask's mode; checked again when it exists
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
            raise ClusterError(
                f"PostgreSQL runs as user {user.pw_name} (it refuses root), which cannot enter {path} "
                f"(mode {stat.filemode(st.st_mode)}, {owner}) on the way to the cluster folder {folder}: "
                f"choose a cluster folder that user can reach, or allow it in (chmod o+x {path})")


@dataclass
class Connection:
    """Where a running cluster's PostgreSQL answers (read from its postmaster.pid)."""

    pid: int
    port: int
    socket_dir: Path
    bin: Path

    @property
    def url(self) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def psql(self, sql: str, database: str = DATABASE, timeout: float = 30.0) -> str:
        """Run one SQL statement over the unix socket; its rows, unaligned, `|`-separated."""
        proc = subprocess.run([str(self.bin / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
                               "-U", SUPERUSER, "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-c", sql], capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            raise ClusterError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout


def connection(root: Path) -> Connection | None:
    """The PostgreSQL of the cluster in root, if its postmaster runs."""
    data = root.resolve() / DATA
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), Path(lines[4])
    except (OSError, IndexError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        return Connection(pid, port, socket_dir, bin_dir())
    except ClusterError:  # the binaries went away under a running server
        return None


class Postgres:
    """One cluster's PostgreSQL. Made at the start of up: a missing install fails before anything starts."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.data = self.root / DATA
        self.bin = bin_dir()
        self.user = run_as()
        self.port = 0
        _check_reachable(self.root, self.user)

    def launch(self, cluster: DevCluster, state: State, port: int) -> None:
        """initdb, then the postmaster, in the background: one process whose PID (recorded in state as
        `postgres`) runs initdb from a shell that then execs the postmaster, so it overlaps the control
        plane's start and `down` stops it by that PID in either phase."""
        _check_reachable(self.root, self.user)
        socket = self.data / f".s.PGSQL.{port}"
        if len(str(socket)) > SOCKET_PATH_MAX:
            raise ClusterError(f"postgres: the unix socket path {socket} is longer than {SOCKET_PATH_MAX} bytes; "
                               "choose a shorter cluster folder")
        self.port = port
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700, parents=True)
        if self.user is not None:
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
        # initdb's pg_hba.conf with --auth=trust: the unix socket and 127.0.0.1/::1 only
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                  "--no-instructions", "--encoding=UTF8", "--locale=C"]
        settings = {**SETTINGS, "port": str(port), "unix_socket_directories": str(self.data)}
        server = [str(self.bin / "postgres"), "-D", str(self.data)]
        server += [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        script = f"{shlex.join(initdb)} && exec {shlex.join(server)}"
        with open(self.root / "logs" / "postgres.log", "ab") as logf:  # handed to the child
            proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.data,
                                    env=self._env(), **self._as_user())
        state.pids["postgres"] = proc.pid
        state.save()

    def wait(self, cluster: DevCluster, state: State, timeout: float) -> str:
        """Wait until the postmaster accepts connections, create FerretDB's database; FerretDB's URL."""
        cluster._wait(state, "postgres", self._ready, timeout)
        conn = Connection(state.pids["postgres"], self.port, self.data, self.bin)
        deadline = time.monotonic() + timeout
        while True:  # `ready` in postmaster.pid may come a moment before the first connection is accepted
            try:
                conn.psql(f"CREATE DATABASE {DATABASE}", database="postgres")
                conn.psql(GIN_TWINS)
                return conn.url
            except ClusterError as exc:
                if time.monotonic() > deadline or "starting up" not in str(exc):
                    raise ClusterError(f"postgres: could not create the database {DATABASE}: {exc}\n"
                                       f"{cluster._tail('postgres')}") from None
                time.sleep(0.05)

    def _ready(self) -> bool:
        """The postmaster writes `ready` as the status line of postmaster.pid once it accepts connections."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid,
                "extra_groups": os.getgrouplist(self.user.pw_name, self.user.pw_gid)}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "KUBECONFIG"}
        if self.user is not None:
            env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return env
