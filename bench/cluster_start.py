"""How long the local cluster takes to start (up → API ready, node Ready, default SA) and stop.

    python bench/cluster_start.py [--runs 3]

Uses a scratch folder, so it does not touch a running .devcluster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section
from devcluster import DevCluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ups, downs = [], []
    with tempfile.TemporaryDirectory(prefix="gentask-bench-") as tmp:
        for _ in range(args.runs):
            cluster = DevCluster(Path(tmp) / "cluster", log=lambda *_: None)
            t0 = time.monotonic()
            cluster.up()
            ups.append(time.monotonic() - t0)
            t0 = time.monotonic()
            cluster.down(quiet=True)
            downs.append(time.monotonic() - t0)
    body = (f"| measure | runs | median | min | max |\n|---|---|---|---|---|\n"
            f"| devcluster up (all components ready) | {args.runs} | {statistics.median(ups):.1f} s | "
            f"{min(ups):.1f} s | {max(ups):.1f} s |\n"
            f"| devcluster down | {args.runs} | {statistics.median(downs):.1f} s | {min(downs):.1f} s | "
            f"{max(downs):.1f} s |")
    print(body)
    write_section("Local cluster start", "python bench/cluster_start.py", body)


if __name__ == "__main__":
    main()
