"""Shared by the benchmarks: machine facts and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

# GENTASK_BENCH_DOC: write the figures to another file (a trial run, a run of another checkout).
DOC = Path(os.environ.get("GENTASK_BENCH_DOC") or Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
HEADER = "# Benchmarks\n\nFigures measured on the project's machines; each section names its command and date.\n"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def write_section(title: str, command: str, body: str) -> None:
    """Replace (or append) the section `## title` of docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    today = dt.date.today().isoformat()
    section = f"## {title}\n\nMachine: {machine()}. Command: `{command}`. Date: {today}.\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text.rstrip("\n") + "\n")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
