"""python -m devcluster up|down|status|logs|node: the local cluster from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devcluster.cluster import DEFAULT_ROOT, NODE_MODES, ClusterError, DevCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cluster folder (default .devcluster)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the cluster (or report the running one)")
    up.add_argument("--timeout", type=float, default=180)
    up.add_argument("--node-cpu", default="8")
    up.add_argument("--node-memory", default="16Gi")
    up.add_argument("--node-pods", default="110")
    node_help = ("process (default: pods as local processes) or real (kubelet + containerd in namespaces of the "
                 "cluster's); default $GENTASK_DEVCLUSTER_NODE, else process")
    up.add_argument("--node", choices=NODE_MODES, help=node_help)
    up.add_argument("--audit", action="store_true", default=None,
                    help="API server audit log of every write in <root>/logs/audit.log (or GENTASK_DEVCLUSTER_AUDIT=1)")
    run = sub.add_parser("run", help="start the cluster, say what runs, stop all of it on Ctrl-C")
    run.add_argument("--timeout", type=float, default=180)
    run.add_argument("--api-port", type=int, default=int(os.environ.get("PORT", "8080")))
    run.add_argument("--node", choices=NODE_MODES, help=node_help)
    user = sub.add_parser("user", help="write a kubeconfig for a user of the running cluster (a client "
                                       "certificate signed by its CA; grant it rights with RBAC)")
    user.add_argument("username")
    user.add_argument("--group", action="append", default=[], help="a group of the user (repeatable)")
    sub.add_parser("down", help="stop every process the cluster started, by PID")
    sub.add_parser("status", help="print what runs and where")
    logs = sub.add_parser("logs", help="print a pod's log: NAMESPACE/POD [CONTAINER]")
    logs.add_argument("pod")
    logs.add_argument("container", nargs="?")
    images = sub.add_parser("import-image", help="import image archives (OCI or docker tar) into the real node")
    images.add_argument("archives", nargs="+", type=Path)
    images.add_argument("--name", help="tag the (one) archive's image with this name, e.g. gentask:dev")
    sub.add_parser("node", help="run a process node (what `up` starts)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "node":
        from devcluster.node import main as node_main
        return node_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    cluster = DevCluster(args.root, node=getattr(args, "node", None), audit=getattr(args, "audit", None),
                         **({"node_cpu": args.node_cpu, "node_memory": args.node_memory,
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
        elif args.cmd == "import-image":
            from devcluster.realnode import import_images
            for name in import_images(cluster.root, args.archives, name=args.name):
                print(f"  imported {name}")
        elif args.cmd == "user":
            print(cluster.user_kubeconfig(args.username, args.group))
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
        from devcluster.postgres import connection
        pg = connection(cluster.root)
        backend = f"FerretDB over PostgreSQL {pg.bin.parent.name}, {pg.url}" if pg else "FerretDB over PostgreSQL"
        body = json.dumps({"prompt": "a red fox in the snow", "user_id": "demo", "provider": provider, "model": model,
                           "size": size})
        print(f"""
gentask is running on the local cluster:
  REST API         {api}   (docs: {api}/docs)
  operator         metrics {system['metrics']}; tasks in namespace {system['namespace']}
  Kubernetes API   {state.server}   (etcd, kube-apiserver, controller-manager, scheduler)
  {cluster.node_mode + ' node':<16} gentask-node   (runs the task pods; logs in {cluster.root / 'node' / 'pods'})
  MongoDB          {state.mongo_url}   ({backend})
  component logs   {cluster.root / 'logs'}

Try it (provider {provider}):
  curl -s -X POST {api}/api/v1/ai/image/task -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{body}'
  curl -s {api}/api/v1/ai/task/result/<task_id> -H 'Authorization: Bearer {key}'

In another shell: . {cluster.root / 'env'} && kubectl get gt -n {system['namespace']}

Another team's namespace (docs/tenants.md): a task there waits, saying what to do, until
  kubectl label namespace team-a {system['tenant_label']}
  kubectl create secret generic gentask-credentials -n team-a --from-literal=MONGO_URL={system['pod_mongo_url']}

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
    from devcluster.postgres import connection
    pg = connection(cluster.root)
    postgres = (f"{pg.url}\n                       (psql -h {pg.socket_dir} -p {pg.port} -U postgres ferretdb)"
                if pg else "not running")
    print(f"  API server           {state.server}\n  MongoDB (FerretDB)   {state.mongo_url}\n"
          f"  PostgreSQL           {postgres}\n  kubeconfig           {state.kubeconfig}")
    return 0 if cluster.running() else 1


def _logs(cluster: DevCluster, pod: str, container: str | None) -> int:
    namespace, _, name = pod.rpartition("/")
    folders = sorted((cluster.root / "node" / "pods").glob(f"{namespace or 'default'}_{name}_*"),
                     key=lambda p: p.stat().st_mtime)
    if not folders:
        print(f"devcluster: no log for pod {namespace or 'default'}/{name} on the node", file=sys.stderr)
        return 1
    folder = folders[-1]
    logs = {f.stem: [f] for f in sorted(folder.glob(f"{container or '*'}.log"))}  # the process node's
    if not logs:  # the real node's kubelet: <container>/<restart count>.log, lines in the CRI format
        for f in sorted(folder.glob(f"{container or '*'}/*.log"), key=lambda f: int(f.stem)):
            logs.setdefault(f.parent.name, []).append(f)
    for name, files in sorted(logs.items()):
        if len(logs) > 1:
            print(f"==> {name} <==")
        for f in files:
            text = f.read_text(errors="replace")
            if f.parent != folder:  # "<time> stdout|stderr F|P <text>": the text, partial (P) lines joined
                text = "".join(part[3] + ("\n" if part[2] == "F" else "")
                               for line in text.splitlines() if len(part := line.split(" ", 3)) == 4)
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
