"""A worker pod imports only what its task needs: every pod pays its imports once, in CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from gentask.worker.__main__ import _job_command, main

HEAVY = ("aiohttp", "httpx", "kubernetes", "kopf", "fastapi", "volcengine", "openai", "gentask.providers.volcengine",
         "gentask.providers.openai", "gentask.api", "gentask.operator", "pymongo", "gridfs", "gentask.storage", "yaml",
         # each measured on a worker pod's start (docs/benchmarks.md, "Worker CPU a fake task"):
         "importlib.metadata",      # pydantic's plugin scan (gentask.startup), with email and zipfile
         "email", "zipfile",
         "gentask.domain.quota",    # quota models: the operator's business
         "logging.handlers",        # LOG_DIR's rotating file only
         "tempfile",                # a kubeconfig's client-key data only
         "gentask.providers.media",  # the fake provider's images and videos, not its texts
         "argparse", "gettext", "shutil")   # `run NAMESPACE/NAME` is read without argparse


def imported_after(code: str) -> set[str]:
    """The top-level and gentask modules a fresh interpreter has loaded after running code."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"GENTASK_PROVIDERS": "fake,volcengine,openai", "PATH": "/usr/bin:/bin"})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_a_fake_text_task_worker_loads_no_http_library_vendor_sdk_storage_or_other_component():
    """A text fits in the status: pymongo is imported on the first file to keep, not at start."""
    loaded = imported_after("""
        import asyncio, gc
        import gentask.cli
        worker = gentask.cli.load("worker")             # as `gentask worker run NS/NAME` imports it
        assert gc.isenabled()
        assert worker._job_command(["run", "tasks/t-1"]) == ("tasks", "t-1")
        import gentask.worker.run, gentask.kube.client
        from gentask.config import load_settings
        from gentask.kube.client import KubeClient
        from gentask.kube.config import Connection
        from gentask.providers import registry_from_settings

        async def main():
            registry = registry_from_settings(load_settings())
            assert registry.names() == ["fake", "openai", "volcengine"], registry.names()
            registry.get("fake")
            async with KubeClient(Connection(host="https://127.0.0.1:1", ssl=False), light=True):
                pass
        asyncio.run(main())
    """)
    assert not [m for m in HEAVY if m in loaded], sorted(m for m in HEAVY if m in loaded)


def test_the_vendor_sdk_is_loaded_when_a_task_asks_for_that_provider():
    loaded = imported_after("""
        from gentask.config import load_settings
        from gentask.providers import registry_from_settings
        registry_from_settings(load_settings()).get("volcengine")
    """)
    assert {"gentask.providers.volcengine", "volcengine", "httpx"} <= loaded


@pytest.mark.parametrize("argv,target", [
    (["run", "tasks/t-1"], ("tasks", "t-1")),
    (["run", "tasks/a/b"], ("tasks", "a/b")),        # as argparse's path splits it: at the first slash
    (["run", "no-slash"], None), (["run", "/t-1"], None), (["run", "tasks/"], None),
    (["run", "--help"], None), (["run"], None), (["run", "tasks/t-1", "more"], None), (["pool"], None), ([], None),
])
def test_the_job_command_is_read_without_argparse_and_everything_else_with_it(argv, target):
    assert _job_command(argv) == target


@pytest.mark.parametrize("argv,message", [
    (["run", "no-slash"], "task 'no-slash': expected NAMESPACE/NAME"),
    (["run", "tasks/t-1", "more"], "unrecognized arguments: more"),
    (["run"], "the following arguments are required: task"),
])
def test_a_bad_worker_command_line_gets_argparse_s_message_as_before(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
