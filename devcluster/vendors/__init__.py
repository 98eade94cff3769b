"""Local vendor servers for tests, benchmarks and demos: real HTTP on a free loopback port.

    with LocalVendors() as vendors:
        settings = vendors.settings(ai_timeout=5)        # base URLs and keys that the servers accept
        vendors.ark.inject("rate_limited", times=2, retry_after=0.05)
        ...

Each server checks credentials as its vendor does, validates bodies, answers with the vendor's
success and error bodies and status codes, moves jobs through the vendor's states one poll at a
time (`job_steps` polls in progress), and misbehaves on request (`inject`: rate limits, 5xx,
overload, content rejection, slowness, dropped connections, failed jobs, or any vendor error
code verbatim). `requests` records what each server received.
"""

from __future__ import annotations

from typing import Any

from devcluster.vendors._server import Fault, Req, Resp, VendorServer
from devcluster.vendors.ark import ArkServer
from devcluster.vendors.openai import OpenAIServer
from devcluster.vendors.visual import VisualServer

ARK_API_KEY = "ark-local-0a1b2c3d4e5f"
VOLCENGINE_ACCESS_KEY = "AKLTlocal9f8e7d6c5b4a"
VOLCENGINE_SECRET_KEY = "c2VjcmV0LWxvY2FsLXZpc3VhbC1rZXk="
OPENAI_API_KEY = "sk-local-5f4e3d2c1b0a9988"


class LocalVendors:
    """Ark, Visual and OpenAI servers started together, and Settings pointing at them."""

    def __init__(self, *, ark_api_key: str = ARK_API_KEY, access_key: str = VOLCENGINE_ACCESS_KEY,
                 secret_key: str = VOLCENGINE_SECRET_KEY, openai_api_key: str = OPENAI_API_KEY,
                 job_steps: int = 2) -> None:
        self.keys = {"ark_api_key": ark_api_key, "volcengine_access_key": access_key,
                     "volcengine_secret_key": secret_key, "openai_api_key": openai_api_key}
        self.ark = ArkServer(ark_api_key, job_steps=job_steps)
        self.visual = VisualServer(access_key, secret_key, job_steps=job_steps)
        self.openai = OpenAIServer(openai_api_key, job_steps=job_steps)
        self.servers: list[VendorServer] = [self.ark, self.visual, self.openai]

    def start(self) -> LocalVendors:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def reset(self) -> None:
        for server in self.servers:
            server.reset()

    def __enter__(self) -> LocalVendors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, **overrides: Any):
        """The gentask Settings with the servers' URLs and keys (overrides win)."""
        from gentask.config import Settings
        values: dict[str, Any] = {"ark_base_url": self.ark.url, "visual_base_url": self.visual.url,
                                  "openai_base_url": self.openai.url, **self.keys}
        return Settings(**{**values, **overrides})

    def environ(self) -> dict[str, str]:
        """The same as environment variables, for a `gentask` subprocess."""
        return {"ARK_BASE_URL": self.ark.url, "VOLCENGINE_VISUAL_BASE_URL": self.visual.url,
                "OPENAI_BASE_URL": self.openai.url, "ARK_API_KEY": self.keys["ark_api_key"],
                "VOLCENGINE_ACCESS_KEY": self.keys["volcengine_access_key"],
                "VOLCENGINE_SECRET_KEY": self.keys["volcengine_secret_key"],
                "OPENAI_API_KEY": self.keys["openai_api_key"]}


__all__ = ["ArkServer", "Fault", "LocalVendors", "OpenAIServer", "Req", "Resp", "VendorServer", "VisualServer"]
