"""Pod start latency on the local cluster's node: Job created → its pod Running, over N Jobs.

    python bench/pod_start.py [--jobs 50] [--interval 0.2] [--node process|real] [--root DIR]

Starts the local cluster if none runs in --root (default .devcluster; and stops it after). Jobs
are created one every --interval seconds; a watch records when each pod is first seen Running.
On the process node a pod is a `python -c pass` process; on the real node (--node real) it is a
container of the pause image running `/pause -v` (prints its version, exits 0): no registry is
reachable, and pause is the one image every real node has.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import percentile, write_section
from devcluster import DevCluster

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--node", choices=("process", "real"), default="process")
    parser.add_argument("--root", type=Path, default=ROOT / ".devcluster")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    dev = DevCluster(args.root, log=lambda *_: None, node=args.node)
    state = dev.running()
    started = state is None
    if started:
        state = dev.up()
    api = config.new_client_from_config(str(state.kubeconfig))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    while True:
        try:
            core.read_namespaced_service_account("default", ns)
            break
        except client.ApiException:
            time.sleep(0.1)
    if args.node == "real":
        from devcluster.realnode import PAUSE_IMAGE
        container = {"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                     "command": ["/pause", "-v"]}
    else:
        container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", "pass"]}
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, ns, timeout_seconds=600):
            pod = event["object"]
            job = (pod.metadata.labels or {}).get("job-name")
            if job and pod.status.phase in ("Running", "Succeeded") and job not in running:
                running[job] = time.monotonic()
            if len(running) >= args.jobs:
                w.stop()
        done.set()

    threading.Thread(target=watcher, daemon=True).start()
    time.sleep(0.5)
    for i in range(args.jobs):
        name = f"j{i:03d}"
        created[name] = time.monotonic()
        batch.create_namespaced_job(ns, {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {
            "spec": {"restartPolicy": "Never", "containers": [container]}}}})
        time.sleep(args.interval)
    done.wait(300)
    latencies = [(running[n] - created[n]) * 1000 for n in created if n in running]
    core.delete_namespace(ns)
    if started:
        dev.down(quiet=True)
    body = (f"| Jobs | created every | reached Running | p50 | p99 | max |\n|---|---|---|---|---|---|\n"
            f"| {args.jobs} | {args.interval:.1f} s | {len(latencies)} | {percentile(latencies, 50):.0f} ms | "
            f"{percentile(latencies, 99):.0f} ms | {max(latencies):.0f} ms |\n\n"
            "The path measured: Job created → Job controller creates the pod → scheduler binds it → the process "
            "node sees it (watch), requests a token, starts the process and reports Running.")
    if args.node == "real":
        body = body.split("\n\n")[0] + (
            f"\n\nLoad average (1 min) at start and end: {load_start:.1f} and {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores; other work on the machine shares them. The node shares them with the control "
            "plane: each pod costs a shim, a pause container, a CNI ADD and DEL and runc create, start and delete "
            "for each container, so at a Job every 0.2 s the node is saturated and the latency grows over the run "
            "(throughput-bound); at a Job a second it is the latency of one pod."
            "\n\nThe path measured: Job created → Job controller creates the pod → scheduler binds it → the kubelet "
            "sees it, mounts its service-account token, has containerd make the sandbox (pause container, network "
            "namespace, CNI bridge address) and start the container (runc), and reports Running (or Succeeded, "
            "whichever the watch sees first).")
        print(body)
        every = "" if args.interval == 0.2 else f", a Job every {args.interval:g} s"
        write_section(f"Pod start latency (real node{every})",
                      f"python bench/pod_start.py --jobs {args.jobs} --interval {args.interval:g} --node real", body)
        return
    print(body)
    write_section("Pod start latency", f"python bench/pod_start.py --jobs {args.jobs}", body)


if __name__ == "__main__":
    main()
