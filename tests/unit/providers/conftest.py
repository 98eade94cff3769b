"""Fixtures: the local vendor servers (started once), settings pointing at them, a fast retry policy."""

from __future__ import annotations

import struct
import zlib

import pytest

from devcluster.vendors import LocalVendors
from gentask.domain.task import GenerationTaskSpec
from gentask.providers import RetryPolicy, registry_from_settings


@pytest.fixture(scope="session")
def vendors_session():
    with LocalVendors(job_steps=2) as vendors:
        yield vendors


@pytest.fixture
def vendors(vendors_session):
    """The servers, with no faults, jobs or recorded requests left from other tests."""
    vendors_session.reset()
    yield vendors_session
    vendors_session.reset()
    for server in vendors_session.servers:
        server.job_steps = 2


@pytest.fixture
def settings(vendors):
    return vendors.settings(ai_timeout=2.0)


@pytest.fixture
async def registry(settings):
    registry = registry_from_settings(settings)
    yield registry
    await registry.aclose()


@pytest.fixture
def policy():
    """Delays small enough for tests; the shape (backoff, jitter, Retry-After bound) is the real one."""
    return RetryPolicy(timeout=2.0, base_delay=0.01, max_delay=0.05, max_retry_after=1.0, poll_interval=0.005)


def task(type_: str, provider: str, model: str, prompt: str = "a red fox", **kw) -> GenerationTaskSpec:
    kw.setdefault("retries", 0)
    return GenerationTaskSpec(type=type_, provider=provider, model=model, prompt=prompt, **kw)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode our own PNGs (RGB, 8 bit, filter 0 rows): width, height and rows of pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + chunk), f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert ihdr is not None
    width, height, depth, colour = ihdr[:4]
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    return width, height, [raw[i * stride + 1:(i + 1) * stride] for i in range(height)]
