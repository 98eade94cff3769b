"""Provider-layer calls per second against the local vendor servers at zero latency, per vendor.

    python bench/providers.py [--seconds 2] [--concurrency 16] [--no-docs]

Each row runs `gentask.providers.generate()` (catalog validation, the retry wrapper with its
per-call timeout, one vendor HTTP call over loopback, parsing) for `--seconds`, once from one
coroutine (calls one after another) and once from `--concurrency` coroutines. The local servers
(devcluster.vendors) run in a separate process, with jobs that finish at the first poll, so a
video row is one submit plus one poll. The "fake" rows call the in-process simulator: the
runner's own overhead, no HTTP.

Prints a table and refreshes the "## Provider layer" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section
from gentask.config import Settings
from gentask.domain.task import GenerationTaskSpec
from gentask.providers import GenerationFailed, RetryPolicy, generate, registry_from_settings

TITLE = "Provider layer"

CASES = [  # vendor, what, spec
    ("volcengine ark", "image (url)", dict(type="image", provider="volcengine",
                                           model="doubao-seedream-3-0-t2i-250415")),
    ("volcengine ark", "text", dict(type="text", provider="volcengine", model="doubao-pro-4k",
                                    params={"maxTokens": 64})),
    ("volcengine ark", "video (submit + poll)", dict(type="video", provider="volcengine",
                                                     model="doubao-seedance-1-0-pro-250528")),
    ("volcengine visual", "image (b64, 512x512)", dict(type="image", provider="volcengine",
                                                       model="jimeng_high_aes_general_v21_L",
                                                       params={"responseFormat": "b64_json"})),
    ("volcengine visual", "video (submit + poll)", dict(type="video", provider="volcengine",
                                                        model="jimeng_vgfm_t2v_l20")),
    ("openai", "image (b64, 1024x1024)", dict(type="image", provider="openai", model="gpt-image-1.5")),
    ("openai", "text", dict(type="text", provider="openai", model="gpt-4.1", params={"maxTokens": 64})),
    ("fake", "image (64x64, in process)", dict(type="image", provider="fake", model="fake-image",
                                               params={"size": "64x64"})),
    ("fake", "text (in process)", dict(type="text", provider="fake", model="fake-text", params={"maxTokens": 64})),
]


@dataclass
class Row:
    vendor: str
    what: str
    sequential: float          # calls/s from one coroutine
    per_second: float          # calls/s from `concurrency` coroutines
    p50_ms: float              # latencies of the concurrent run
    p99_ms: float
    errors: int


def _serve(conn) -> None:
    from devcluster.vendors import LocalVendors
    with LocalVendors(job_steps=0) as vendors:
        conn.send({"ark_base_url": vendors.ark.url, "visual_base_url": vendors.visual.url,
                   "openai_base_url": vendors.openai.url, **vendors.keys})
        conn.recv()


async def measure(spec: GenerationTaskSpec, registry, policy, seconds: float,
                  concurrency: int) -> tuple[float, list[float], int]:
    """calls/s, latencies and errors of `concurrency` coroutines calling for `seconds`."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                await generate(spec, registry=registry, policy=policy)
            except GenerationFailed:
                errors += 1
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.monotonic() - began), latencies, errors


async def run(settings: Settings, seconds: float, concurrency: int) -> list[Row]:
    policy = RetryPolicy(timeout=30, retries=0, poll_interval=0)
    rows = []
    async with registry_from_settings(settings) as registry:
        for vendor, what, fields in CASES:
            spec = GenerationTaskSpec(prompt="a red fox in the snow", retries=0, **fields)
            await measure(spec, registry, policy, 0.3, concurrency)          # warm connections and caches
            sequential, _, errors1 = await measure(spec, registry, policy, seconds, 1)
            per_second, latencies, errors = await measure(spec, registry, policy, seconds, concurrency)
            cuts = statistics.quantiles(latencies, n=100)
            row = Row(vendor, what, sequential, per_second, cuts[49] * 1000, cuts[98] * 1000, errors + errors1)
            print(f"{row.vendor:<18} {row.what:<26} {row.sequential:7.0f}/s one at a time  "
                  f"{row.per_second:7.0f}/s x{concurrency}  p50 {row.p50_ms:6.1f} ms  p99 {row.p99_ms:6.1f} ms  "
                  f"errors {row.errors}", flush=True)
            rows.append(row)
    return rows


def report(rows: list[Row], concurrency: int, load: float) -> str:
    lines = [f"Load average (1 min) when it started: {load:.1f} on {os.cpu_count()} cores; other work on the "
             "machine lowers these figures.", "",
             f"| Vendor | Call | Calls/s, one at a time | Calls/s, {concurrency} concurrent | p50 | p99 | Errors |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.vendor} | {r.what} | {r.sequential:.0f} | {r.per_second:.0f} | {r.p50_ms:.1f} ms | "
              f"{r.p99_ms:.1f} ms | {r.errors} |" for r in rows]
    lines += ["", "What is measured: `gentask.providers.generate()` (catalog validation, retry wrapper and per-call "
              "timeout, one vendor HTTP call over loopback, response parsing), first from one coroutine, then from "
              f"{concurrency} (p50/p99 are theirs), against the local vendor servers of `devcluster.vendors`, "
              "which run in a second process with zero latency and jobs that finish at the first poll (a video row "
              "is one submit and one poll). Client and servers share the 2 cores and the servers are Python "
              "`http.server` threads, so these are floors for the provider layer, not a vendor's capacity; the "
              "fake rows are the runner alone. httpcore tries `import sniffio` on every request and it is not "
              "installed here: a failed import per call, a measurable share of the client's time."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    servers = ctx.Process(target=_serve, args=(child,), daemon=True)
    servers.start()
    try:
        urls = parent.recv()
        settings = Settings(ai_timeout=30, providers=["volcengine", "openai", "fake"], **urls)
        rows = asyncio.run(run(settings, args.seconds, args.concurrency))
    finally:
        parent.send("stop")
        servers.join(timeout=10)
        if servers.is_alive():
            servers.terminate()
    if not args.no_docs:
        command = "python bench/providers.py" + (f" --seconds {args.seconds:g}" if args.seconds != 2 else "") + \
            (f" --concurrency {args.concurrency}" if args.concurrency != 16 else "")
        write_section(TITLE, command, report(rows, args.concurrency, load))
        print(f"refreshed the '{TITLE}' section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
