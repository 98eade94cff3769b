"""A worker pod imports only what its task needs: every pod pays its imports once, in CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("aiohttp", "httpx", "kubernetes", "kopf", "fastapi", "volcengine", "openai", "gentask.providers.volcengine",
         "gentask.providers.openai", "gentask.api", "gentask.operator", "pymongo", "gridfs", "gentask.storage", "yaml")


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
        import asyncio
        import gentask.worker.__main__, gentask.worker.run, gentask.kube.client
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
