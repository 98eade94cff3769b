"""python -m devcluster up|down|status|logs|node: the local cluster from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devcluster.cluster import DEFAULT_ROOT, ClusterError, DevCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cluster folder (default .devcluster)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the cluster (or report the running one)")
    up.add_argument("--timeout", type=float, default=180)
    up.add_argument("--node-cpu", default="8")
    up.add_argument("--node-memory", default="16Gi")
    up.add_argument("--node-pods", default="110")
    run = sub.add_parser("run", help="start the cluster, say what runs, stop all of it on Ctrl-C")
    run.add_argument("--timeout", type=float, default=180)
    run.add_argument("--api-port", type=int, default=int(os.environ.get("PORT", "8080")))
    sub.add_parser("down", help="stop every process the cluster started, by PID")
    sub.add_parser("status", help="print what runs and where")
    logs = sub.add_parser("logs", help="print a pod's log: NAMESPACE/POD [CONTAINER]")
    logs.add_argument("pod")
    logs.add_argument("container", nargs="?")
    sub.add_parser("node", help="run a process node (what `up` starts)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "node":
        from devcluster.node import main as node_main
        return node_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    cluster = DevCluster(args.root, **({"node_cpu": args.node_cpu, "node_memory": args.node_memory,
                                        "node_pods": args.node_pods} if args.cmd == "up" else {}))
    if args.cmd == "run":
        return _run(cluster, args.timeout, args.api_port)
    try:
        if args.cmd == "up":
            state = cluster.up(timeout=args.timeout)
            print(f"  kubeconfig: {state.kubeconfig}\n  env:        . {cluster.root / 'env'}\n"
                  f"  logs:       {cluster.root / 'logs'} (components), {cluster.root / 'node' / 'pods'} (pods)")
        elif args.cmd == "down":
            cluster.down()
        elif args.cmd == "status":
            return _status(cluster)
        elif args.cmd == "logs":
            return _logs(cluster, args.pod, args.container)
    except ClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(cluster: DevCluster, timeout: float, api_port: int) -> int:
    """The foreground form of `up`: Ctrl-C (or SIGTERM) stops everything it started."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        state = cluster.up(timeout=timeout)
        from devcluster.system import start_system
        system = start_system(cluster, state, api_port=api_port)
    except ClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        cluster.down()
        return 1
    try:
        provider = "volcengine" if os.environ.get("ARK_API_KEY") else "fake"
        model = "doubao-seedream-3-0-t2i-250415" if provider == "volcengine" else "fake-image"
        size = "1024x1024" if provider == "volcengine" else "512x512"
        api, key = system["api"], system["api_key"]
        body = json.dumps({"prompt": "a red fox in the snow", "user_id": "demo", "provider": provider, "model": model,
                           "size": size})
        print(f"""
gentask is running on the local cluster:
  REST API         {api}   (docs: {api}/docs)
  operator         metrics {system['metrics']}; tasks in namespace {system['namespace']}
  Kubernetes API   {state.server}   (etcd, kube-apiserver, controller-manager, scheduler)
  process node     gentask-node   (runs the task pods; logs in {cluster.root / 'node' / 'pods'})
  MongoDB          {state.mongo_url}   (FerretDB over SQLite)
  component logs   {cluster.root / 'logs'}

Try it (provider {provider}):
  curl -s -X POST {api}/api/v1/ai/image/task -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{body}'
  curl -s {api}/api/v1/ai/task/result/<task_id> -H 'Authorization: Bearer {key}'

In another shell: . {cluster.root / 'env'} && kubectl get gt -n {system['namespace']}

Press Ctrl-C to stop all of it.""", flush=True)
        while not stop.wait(1.0):
            if cluster.running() is None:
                print("devcluster: a component stopped; see the logs in", cluster.root / "logs", file=sys.stderr)
                return 1
        return 0
    finally:
        cluster.down()


def _status(cluster: DevCluster) -> int:
    from devcluster.cluster import pid_alive
    state = cluster.state()
    if state is None:
        print("devcluster: not running (start it with `make devcluster-up`)")
        return 1
    for name, pid in state.pids.items():
        print(f"  {name:<20} pid {pid:<8} {'running' if pid_alive(pid) else 'STOPPED'}")
    print(f"  API server           {state.server}\n  MongoDB (FerretDB)   {state.mongo_url}\n"
          f"  kubeconfig           {state.kubeconfig}")
    return 0 if cluster.running() else 1


def _logs(cluster: DevCluster, pod: str, container: str | None) -> int:
    namespace, _, name = pod.rpartition("/")
    folders = sorted((cluster.root / "node" / "pods").glob(f"{namespace or 'default'}_{name}_*"),
                     key=lambda p: p.stat().st_mtime)
    if not folders:
        print(f"devcluster: no log for pod {namespace or 'default'}/{name} on the process node", file=sys.stderr)
        return 1
    files = sorted(folders[-1].glob(f"{container or '*'}.log"))
    for f in files:
        if len(files) > 1:
            print(f"==> {f.stem} <==")
        sys.stdout.write(f.read_text(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
