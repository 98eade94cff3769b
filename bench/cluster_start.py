"""How long the local cluster takes to start (up → API ready, node Ready, default SA) and stop.

    python bench/cluster_start.py [--runs 3] [--node process|real]

Uses a scratch folder, so it does not touch a running .devcluster. With --node real the cluster
runs the real node (kubelet, kube-proxy and containerd in namespaces of its own; see
devcluster.realnode) and the figures go to a section of their own.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--node", choices=("process", "real"), default="process")
    args = parser.parse_args()
    ups, downs = [], []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gentask-bench-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as an unprivileged user when the bench runs as root
        for _ in range(args.runs):
            cluster = DevCluster(Path(tmp) / "cluster", log=lambda *_: None, node=args.node)
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
    if args.node == "real":
        body += (f"\n\nLoad average (1 min) at start and end: {load_start:.1f} and {os.getloadavg()[0]:.1f} on "
                 f"{os.cpu_count()} cores; other work on the machine shares them."
                 "\n\nReal node: up is ready when the kubelet's node is Ready (containerd started, the pause image "
                 "imported, kubelet and kube-proxy started, all in the cluster's namespaces); down includes "
                 "removing the node's containers, cgroups and files.")
        print(body)
        write_section("Local cluster start (real node)", "python bench/cluster_start.py --node real", body)
        return
    print(body)
    write_section("Local cluster start", "python bench/cluster_start.py", body)


if __name__ == "__main__":
    main()
