"""gentask worker run NAMESPACE/NAME: run one GenerationTask (what the task's Job pod runs);
gentask worker pool: the worker pool's long-running process (gentask.worker.pool)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

from gentask.config import SettingsError, load_settings
from gentask.domain.task import GenerationTask
from gentask.kube.errors import ConfigError
from gentask.kube.names import EXIT_PERMANENT, EXIT_RETRY
from gentask.logs import setup_logging

if TYPE_CHECKING:
    from gentask.storage import ArtifactStore

log = logging.getLogger("gentask.worker")
KUBE_TIMEOUT: float | None = None    # as with the kubernetes package before: wait for a slow API server


async def _main(namespace: str, name: str) -> int:
    from gentask.kube.client import KubeClient
    from gentask.kube.config import load_connection
    from gentask.providers import registry_from_settings
    from gentask.worker.run import Worker

    settings = load_settings()
    setup_logging(settings)

    def store() -> ArtifactStore | None:
        """Connected on the first file to keep: a text task never imports pymongo."""
        from gentask.storage import ArtifactStore, connect
        return ArtifactStore(connect(settings)) if os.environ.get("MONGO_URL") else None
    connection = load_connection()
    current = asyncio.current_task()
    assert current is not None      # asyncio.run's main task
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, current.cancel)
    # light: a few requests over asyncio streams, without importing aiohttp (gentask.kube.http11)
    async with (registry_from_settings(settings) as registry,
                KubeClient(connection, timeout=KUBE_TIMEOUT, light=True) as kube):
        worker = Worker(kube, settings, registry, store, os.environ.get("POD_NAME") or socket.gethostname())
        try:
            return await worker.run(namespace, name, queued_task(namespace, name))
        except asyncio.CancelledError:
            log.warning("stopped by a signal; the operator reports the outcome", extra={"task": name})
            return 128 + signal.SIGTERM
        except Exception as exc:  # noqa: BLE001 - anything unexpected: let the Job try again
            log.exception("worker failed", extra={"task": name})
            await worker.report_retry(namespace, name, f"the worker failed: {type(exc).__name__}: {exc}")
            return EXIT_RETRY


def queued_task(namespace: str, name: str) -> GenerationTask | None:
    """The task as the operator queued it, from the pod (GENTASK_TASK, the gentask.io/task annotation)."""
    text = os.environ.get("GENTASK_TASK")
    if not text:
        return None
    try:
        task = GenerationTask.model_validate_json(text)
    except ValueError as exc:
        log.warning("GENTASK_TASK is not a GenerationTask; reading the task instead", extra={"error": str(exc)[:200]})
        return None
    if (task.namespace, task.name) != (namespace, name):
        log.warning("GENTASK_TASK names another task; reading the task instead",
                    extra={"task": f"{namespace}/{name}", "given": f"{task.namespace}/{task.name}"})
        return None
    return task


def _job_command(argv: list[str]) -> tuple[str, str] | None:
    """NAMESPACE and NAME when argv is `run NAMESPACE/NAME` and nothing else, as a Job's pod gives it:
    read without argparse (whose parser costs each pod some CPU). None: argparse reads argv."""
    if len(argv) == 2 and argv[0] == "run" and not argv[1].startswith("-"):
        namespace, sep, name = argv[1].partition("/")
        if sep and namespace and name:
            return namespace, name
    return None


def main(argv: list[str] | None = None) -> int:
    """`gentask worker run NAMESPACE/NAME`: the process exit code is the worker's."""
    argv = sys.argv[1:] if argv is None else argv
    target = _job_command(argv)
    if target is None:
        import argparse

        parser = argparse.ArgumentParser(prog="gentask worker", description=__doc__)
        sub = parser.add_subparsers(dest="cmd", required=True)
        run = sub.add_parser("run", help="run one task")
        run.add_argument("task", help="NAMESPACE/NAME")
        sub.add_parser("pool", help="run queued tasks until SIGTERM (GENTASK_EXECUTOR=pool; gentask.worker.pool)")
        args = parser.parse_args(argv)
        if args.cmd == "pool":
            from gentask.worker.pool import main as pool_main
            return pool_main([])
        namespace, sep, name = args.task.partition("/")
        if not sep or not namespace or not name:
            parser.error(f"task {args.task!r}: expected NAMESPACE/NAME")
        target = namespace, name
    namespace, name = target
    try:
        return asyncio.run(_main(namespace, name))
    except SettingsError as exc:
        print(f"gentask worker: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    except ConfigError as exc:      # no way to the API server: perhaps the next pod has one
        print(f"gentask worker: {exc}", file=sys.stderr)
        return EXIT_RETRY


if __name__ == "__main__":
    sys.exit(main())
