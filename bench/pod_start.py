"""Pod start latency on the process node: Job created → its pod Running, over N Jobs.

    python bench/pod_start.py [--jobs 50] [--interval 0.2]

Starts the local cluster if none runs in .devcluster (and stops it after). Jobs are created one
every --interval seconds; a watch records when each pod is first seen Running.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    dev = DevCluster(ROOT / ".devcluster", log=lambda *_: None)
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
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "python:3.11",
                                                              "command": ["python", "-c", "pass"]}]}}}})
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
    print(body)
    write_section("Pod start latency", f"python bench/pod_start.py --jobs {args.jobs}", body)


if __name__ == "__main__":
    main()
