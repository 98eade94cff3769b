"""Shared by the benchmarks: a free port, a process's CPU seconds, and the API started as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from devcluster.cluster import free_port

__all__ = ["TICK", "cpu_seconds", "free_port", "start_api", "stat_cpu"]

TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(text: str) -> float:
    """utime + stime, in seconds, of a /proc/PID/stat line (its fields after the command's closing paren)."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process has used so far; 0 once it is gone."""
    try:
        return stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return 0.0


def start_api(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m gentask api` with env, its output into log_path; returns once it accepts on port."""
    with log_path.open("wb") as log_file:       # warnings and errors only (LOG_LEVEL=warning)
        proc = subprocess.Popen([sys.executable, "-m", "gentask", "api"], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not start")
