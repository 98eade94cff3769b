"""The process node: a small kubelet that runs the pods bound to it as local processes.

It registers a Node with a configurable capacity, keeps its Lease fresh, watches the pods the
scheduler binds to it and runs each container's command/args as a process group of its own:

* env is resolved as a kubelet resolves it: envFrom (configMapRef, secretRef, prefix), then env
  (value with $(VAR) expansion, secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef);
  a missing non-optional reference leaves the container Waiting with CreateContainerConfigError
  and is retried;
* the pod's service account gets a kubeconfig built from a TokenRequest bound to the pod
  (KUBECONFIG points at it; written as JSON, which a gentask worker reads without importing yaml,
  as in a real pod it reads none), so what the pod may do is what RBAC allows;
* stdout and stderr go to ``<root>/pods/<namespace>_<pod>_<uid8>/<container>.log``, and the
  kubelet's log endpoint (``GET /containerLogs/NS/POD/CONTAINER``, TLS with the cluster's kubelet
  certificate, client certificates of the cluster's CA only) serves them, so `kubectl logs`
  works through the API server;
* phase, container states, restart counts and exit codes are written to the pod's status;
* deletion is honoured: SIGTERM to the process group, SIGKILL after the grace period, then the
  pod object is removed as a kubelet removes it; spec.activeDeadlineSeconds is enforced.

An image is a name for a local environment (see ``ImageMap``): by default every image runs with
the node's own Python environment first on PATH, so ``python`` and ``gentask`` are the
project's; an image whose name contains ``gentask`` has the ``gentask`` command as entrypoint.

Volumes, resource limits, probes and security contexts are not enforced: processes run as the
node's user, without isolation. This is a test harness, not a sandbox.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("devcluster.node")

LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 30.0
RESYNC_EVERY = 30.0
TICK = 0.05
CONFIG_RETRY = 2.0
TOKEN_SECONDS = 86400
SMP = "application/strategic-merge-patch+json"


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


# --------------------------------------------------------------------------------------------
# Images: how an image name maps to a local command environment
# --------------------------------------------------------------------------------------------

@dataclass
class ImageEnv:
    """What running "an image" means here: PATH entries, extra env, and an entrypoint."""

    path: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)


class ImageMap:
    """Maps image names (glob patterns, first match wins) to local environments.

    The defaults: ``*gentask*`` runs the ``gentask`` command of the node's Python environment;
    every other image (``python:3.11``, ``busybox``...) runs its command with that environment
    first on PATH. A YAML file (``--images``) adds rules before the defaults::

        - image: "ghcr.io/acme/tool:*"
          path: [/opt/tool/bin]
          env: {TOOL_HOME: /opt/tool}
          entrypoint: [tool]
    """

    def __init__(self, rules: list[tuple[str, ImageEnv]] | None = None) -> None:
        venv_bin = str(Path(sys.executable).parent)
        self.rules = list(rules or []) + [
            ("*gentask*", ImageEnv(path=[venv_bin], entrypoint=[str(Path(venv_bin) / "gentask")])),
            ("*", ImageEnv(path=[venv_bin])),
        ]

    @classmethod
    def load(cls, path: Path | None) -> ImageMap:
        rules: list[tuple[str, ImageEnv]] = []
        if path and path.exists():
            for item in yaml.safe_load(path.read_text()) or []:
                rules.append((item["image"], ImageEnv(path=list(item.get("path", [])),
                                                      env=dict(item.get("env", {})),
                                                      entrypoint=list(item.get("entrypoint", [])))))
        return cls(rules)

    def resolve(self, image: str) -> ImageEnv:
        for pattern, env in self.rules:
            if fnmatch.fnmatch(image, pattern):
                return env
        return ImageEnv()


# --------------------------------------------------------------------------------------------
# Env resolution, as a kubelet does it
# --------------------------------------------------------------------------------------------

class ConfigError(Exception):
    """A container cannot be configured yet (CreateContainerConfigError): retried."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


def _field_path(pod: Any, path: str) -> str:
    meta = pod.metadata
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (getattr(meta, m.group(1)) or {}).get(m.group(2), "")
    values = {
        "metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name, "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "metadata.labels": "\n".join(f'{k}="{v}"' for k, v in sorted((meta.labels or {}).items())),
        "metadata.annotations": "\n".join(f'{k}="{v}"' for k, v in sorted((meta.annotations or {}).items())),
    }
    if path not in values:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return values[path] or ""


def _quantity(value: str | None) -> float:
    if not value:
        return 0.0
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20,
             "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not m:
        return 0.0
    return float(m.group(1)) * units.get(m.group(2), 1.0)


class EnvResolver:
    """Resolves a container's env against the API, as the kubelet does."""

    def __init__(self, core: client.CoreV1Api, node_capacity: dict[str, str]) -> None:
        self.core = core
        self.capacity = node_capacity

    def _secret(self, ns: str, name: str, optional: bool) -> dict[str, str] | None:
        import base64
        try:
            data = self.core.read_namespaced_secret(name, ns).data or {}
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise ConfigError(f'secret "{name}" not found') from None
            raise
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}

    def _configmap(self, ns: str, name: str, optional: bool) -> dict[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, ns).data or {})
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise ConfigError(f'configmap "{name}" not found') from None
            raise

    def _key(self, kind: str, source: dict[str, str] | None, name: str, key: str, optional: bool) -> str | None:
        if source is None:
            return None
        if key not in source:
            if optional:
                return None
            raise ConfigError(f'couldn\'t find key {key} in {kind} {name}')
        return source[key]

    def resolve(self, pod: Any, container: Any) -> dict[str, str]:
        ns = pod.metadata.namespace
        env: dict[str, str] = {}
        for src in container.env_from or []:
            prefix = src.prefix or ""
            if src.config_map_ref:
                data = self._configmap(ns, src.config_map_ref.name, bool(src.config_map_ref.optional))
            else:
                data = self._secret(ns, src.secret_ref.name, bool(src.secret_ref.optional))
            for k, v in (data or {}).items():
                env[prefix + k] = v
        for var in container.env or []:
            value: str | None
            if var.value_from is None:
                value = expand(var.value or "", env)
            elif var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                value = self._key("secret", self._secret(ns, ref.name, bool(ref.optional)), ref.name, ref.key,
                                  bool(ref.optional))
            elif var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                value = self._key("configmap", self._configmap(ns, ref.name, bool(ref.optional)), ref.name,
                                  ref.key, bool(ref.optional))
            elif var.value_from.field_ref:
                value = _field_path(pod, var.value_from.field_ref.field_path)
            elif var.value_from.resource_field_ref:
                value = self._resource(container, var.value_from.resource_field_ref)
            else:
                raise ConfigError(f"env {var.name}: unsupported valueFrom")
            if value is not None:
                env[var.name] = value
        return env

    def _resource(self, container: Any, ref: Any) -> str:
        kind, _, res = ref.resource.partition(".")
        resources = container.resources
        values = (getattr(resources, kind, None) if resources else None) or {}
        raw = values.get(res) or self.capacity.get(res, "0")
        divisor = _quantity(ref.divisor) or 1.0
        amount = _quantity(raw) / divisor
        return str(max(1, int(-(-amount // 1))))


# --------------------------------------------------------------------------------------------
# Running pods
# --------------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen | None = None
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    restarts: int = 0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    signalled: bool = False
    next_start: float = 0.0


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    pod: Any
    dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    started: datetime | None = None
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    terminating_since: float | None = None
    grace: float = 30.0
    removed: bool = False
    last_report: str = ""
    retry_at: float = 0.0


class ProcessNode:
    def __init__(self, api: client.ApiClient, name: str, root: Path, capacity: dict[str, str],
                 server: str, ca_file: Path | None, taints: list[dict[str, str]] | None = None,
                 labels: dict[str, str] | None = None, images: ImageMap | None = None) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.name = name
        self.root = root
        self.capacity = capacity
        self.server = server
        self.ca_file = ca_file
        self.taints = taints or []
        self.labels = labels or {}
        self.images = images or ImageMap()
        self.resolver = EnvResolver(self.core, capacity)
        self.runs: dict[str, PodRun] = {}
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stopping = threading.Event()
        self.pods_dir = root / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.log_port = 0
        self._log_server: ThreadingHTTPServer | None = None

    # ---- node registration, lease -------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        ts = iso(now())

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": ts, "lastTransitionTime": ts}

        return {
            "capacity": self.capacity, "allocatable": self.capacity,
            "conditions": [
                cond("Ready", "True", "KubeletReady", "gentask process node is posting ready status"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"machineID": "gentask", "systemUUID": self.name, "bootID": str(os.getpid()),
                         "kernelVersion": os.uname().release, "osImage": "gentask process node",
                         "containerRuntimeVersion": "process://1", "kubeletVersion": "v1.36.3",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
        }

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "gentask.io/process-node": "true", **self.labels}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": self.taints} if self.taints else {}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.name, {"metadata": {"labels": labels}, "spec": {"taints": self.taints or None}})
        self.core.patch_node_status(self.name, {"status": self._node_status()})
        self._renew_lease()
        log.info("node registered", extra={"node": self.name, "capacity": self.capacity})

    def _renew_lease(self) -> None:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": ts}}
        try:
            self.coord.patch_namespaced_lease(self.name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(RENEW_EVERY):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= STATUS_EVERY:
                    self.core.patch_node_status(self.name, {"status": self._node_status()})
                    last_status = time.monotonic()
            except Exception:  # keep beating; the API server may be restarting
                log.warning("lease renewal failed", exc_info=True)

    # ---- watching pods --------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.name}"
        core = client.CoreV1Api(self.api)
        while not self.stopping.is_set():
            try:
                listing = core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listing.items:
                    seen.add(pod.metadata.uid)
                    self.events.put(("MODIFIED", pod))
                for uid in list(self.runs):
                    if uid not in seen:
                        self.events.put(("GONE", uid))
                rv = listing.metadata.resource_version
                stream = watch.Watch().stream(core.list_pod_for_all_namespaces, field_selector=selector,
                                              resource_version=rv, timeout_seconds=int(RESYNC_EVERY),
                                              allow_watch_bookmarks=False)
                for event in stream:
                    if self.stopping.is_set():
                        return
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self.events.put(("GONE", pod.metadata.uid))
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.events.put(("MODIFIED", pod))
            except Exception as exc:  # relist after any watch failure
                if not self.stopping.is_set():
                    log.warning("pod watch restarting: %s", exc)
                    time.sleep(1.0)

    # ---- the sync loop -------------------------------------------------------------------------

    # ---- the kubelet's log endpoint ------------------------------------------------------------

    def serve_logs(self, pki: Path) -> None:
        """Serve container logs as a kubelet does, to clients with a certificate of the cluster's CA
        (the API server's kubelet client); on a free loopback port, written into the Node's status."""
        if not all((pki / f).is_file() for f in ("kubelet.crt", "kubelet.key", "ca.crt")):
            log.warning("no kubelet certificate in %s: container logs are not served (`kubectl logs` fails)", pki)
            return
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(pki / "kubelet.crt", pki / "kubelet.key")
        tls.load_verify_locations(pki / "ca.crt")
        tls.verify_mode = ssl.CERT_REQUIRED
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                log.debug("log endpoint: " + format, *args)

            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                node._serve_log(self)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        self._log_server = server
        self.log_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="log-endpoint", daemon=True).start()
        log.info("container logs served on 127.0.0.1:%d", self.log_port)

    def _serve_log(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) != 4 or parts[0] != "containerLogs":
            request.send_error(404, "only /containerLogs/NAMESPACE/POD/CONTAINER is served here")
            return
        namespace, pod, container = parts[1:]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        run = next((r for r in self.runs.values() if (r.namespace, r.name) == (namespace, pod)), None)
        pattern = f"{glob_escape(namespace)}_{glob_escape(pod)}_*/{glob_escape(container)}.log"
        files = sorted(self.pods_dir.glob(pattern), key=lambda f: f.stat().st_mtime)
        if run is not None:
            files = [run.dir / f"{container}.log"] if (run.dir / f"{container}.log").exists() else []
        if not files:
            request.send_error(404, f"container {container!r} of pod {namespace}/{pod} has no log on this node")
            return
        path = files[-1]
        data = path.read_bytes()
        if query.get("tailLines", "").isdigit():
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) else b""
        if query.get("limitBytes", "").isdigit():
            data = data[:int(query["limitBytes"])]
        request.send_response(200)
        request.send_header("Content-Type", "text/plain")
        request.end_headers()
        with contextlib.suppress(OSError):     # the client went away
            request.wfile.write(data)
            if query.get("follow") != "true":
                return
            offset = path.stat().st_size
            while not self.stopping.is_set():
                size = path.stat().st_size if path.exists() else offset
                if size > offset:
                    with path.open("rb") as f:
                        f.seek(offset)
                        request.wfile.write(f.read(size - offset))
                        request.wfile.flush()
                    offset = size
                elif not self._running(namespace, pod, container):
                    return
                time.sleep(0.2)

    def _running(self, namespace: str, pod: str, container: str) -> bool:
        run = next((r for r in self.runs.values() if (r.namespace, r.name) == (namespace, pod)), None)
        proc = run.procs.get(container) if run is not None else None
        return bool(proc and proc.popen and proc.popen.poll() is None)

    def run(self) -> None:
        self._kill_leftovers()
        self.register()
        threading.Thread(target=self._heartbeat_loop, name="lease", daemon=True).start()
        threading.Thread(target=self._watch_loop, name="watch", daemon=True).start()
        while not self.stopping.is_set():
            try:
                kind, obj = self.events.get(timeout=TICK)
                self._on_event(kind, obj)
                while True:  # drain what else has arrived before ticking
                    kind, obj = self.events.get_nowait()
                    self._on_event(kind, obj)
            except queue.Empty:
                pass
            except Exception:  # one bad pod must not stop the node
                log.exception("event handling failed")
            self._tick()
        self.shutdown()

    def _on_event(self, kind: str, obj: Any) -> None:
        if kind == "GONE":
            run = self.runs.pop(obj, None)
            if run:
                self._kill(run, signal.SIGKILL)
                run.removed = True
            return
        pod = obj
        uid = pod.metadata.uid
        run = self.runs.get(uid)
        if run is None:
            if pod.status and pod.status.phase in ("Succeeded", "Failed"):
                if pod.metadata.deletion_timestamp:
                    self._remove(pod.metadata.namespace, pod.metadata.name, uid)
                return
            run = PodRun(uid=uid, namespace=pod.metadata.namespace, name=pod.metadata.name, pod=pod,
                         dir=self.pods_dir / f"{pod.metadata.namespace}_{pod.metadata.name}_{uid[:8]}")
            run.procs = {c.name: Proc(c.name) for c in pod.spec.containers}
            self.runs[uid] = run
        run.pod = pod
        if pod.metadata.deletion_timestamp and run.terminating_since is None:
            run.terminating_since = time.monotonic()
            grace = pod.metadata.deletion_grace_period_seconds
            if grace is None:
                grace = pod.spec.termination_grace_period_seconds or 30
            run.grace = float(grace)
            self._kill(run, signal.SIGTERM)

    def _tick(self) -> None:
        for run in list(self.runs.values()):
            try:
                self._sync(run)
            except ApiException as exc:
                if exc.status == 404:
                    self._kill(run, signal.SIGKILL)
                    self.runs.pop(run.uid, None)
                else:
                    log.warning("pod %s/%s: API error %s", run.namespace, run.name, exc.status)
            except Exception:  # one pod's failure must not stop the others' sync
                log.exception("pod %s/%s: sync failed", run.namespace, run.name)

    def _sync(self, run: PodRun) -> None:
        pod = run.pod
        now_m = time.monotonic()
        if run.terminating_since is not None:
            alive = [p for p in run.procs.values() if p.popen and p.popen.poll() is None]
            if alive and now_m - run.terminating_since >= run.grace:
                self._kill(run, signal.SIGKILL)
            self._reap(run, restart=False)
            if not any(p.popen and p.popen.poll() is None for p in run.procs.values()):
                if run.phase not in ("Succeeded", "Failed"):
                    self._finish(run, restart_policy_done=True)
                self._report(run)
                self._remove(run.namespace, run.name, run.uid)
                self.runs.pop(run.uid, None)
            return
        if run.phase in ("Succeeded", "Failed"):
            return
        if run.started is None:
            run.started = now()
        deadline = pod.spec.active_deadline_seconds
        if deadline and (now() - run.started).total_seconds() >= deadline:
            self._kill(run, signal.SIGKILL)
            self._reap(run, restart=False)
            run.phase, run.reason = "Failed", "DeadlineExceeded"
            run.message = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
            self._report(run)
            return
        if now_m >= run.retry_at:
            self._start_waiting(run)
        self._reap(run, restart=True)
        self._finish(run)
        self._report(run)

    # ---- containers ------------------------------------------------------------------------

    def _start_waiting(self, run: PodRun) -> None:
        pod = run.pod
        for spec in pod.spec.containers:
            proc = run.procs[spec.name]
            if proc.popen is not None or proc.exit_code is not None and proc.waiting is None:
                continue
            if time.monotonic() < proc.next_start:
                continue
            try:
                self._start(run, spec, proc)
            except ConfigError as exc:
                proc.waiting = ("CreateContainerConfigError", str(exc))
                run.retry_at = time.monotonic() + CONFIG_RETRY

    def _kubeconfig(self, run: PodRun) -> Path | None:
        pod = run.pod
        if pod.spec.automount_service_account_token is False:
            return None
        sa = pod.spec.service_account_name or "default"
        path = run.dir / "kubeconfig"
        if path.exists():
            return path
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                            "uid": pod.metadata.uid}}}
        try:
            token = self.core.create_namespaced_service_account_token(sa, pod.metadata.namespace, body).status.token
        except ApiException as exc:
            raise ConfigError(f"token for service account {sa}: {exc.reason}") from None
        cluster = {"server": self.server}
        if self.ca_file:
            cluster["certificate-authority"] = str(self.ca_file)
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "pod",
               "clusters": [{"name": "local", "cluster": cluster}],
               "users": [{"name": sa, "user": {"token": token}}],
               "contexts": [{"name": "pod", "context": {"cluster": "local", "user": sa,
                                                        "namespace": pod.metadata.namespace}}]}
        path.write_text(json.dumps(doc, indent=2))    # JSON is YAML too; a worker reads it without yaml
        path.chmod(0o600)
        return path

    def _start(self, run: PodRun, spec: Any, proc: Proc) -> None:
        pod = run.pod
        run.dir.mkdir(parents=True, exist_ok=True)
        image = self.images.resolve(spec.image or "")
        env = self.resolver.resolve(pod, spec)
        kubeconfig = self._kubeconfig(run)
        host, _, port = self.server.removeprefix("https://").partition(":")
        tmp = run.dir / "tmp"
        tmp.mkdir(exist_ok=True)
        base = {
            "PATH": os.pathsep.join(image.path + [os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
            "HOME": str(run.dir), "TMPDIR": str(tmp), "HOSTNAME": pod.metadata.name,
            "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port or "443",
            **image.env,
        }
        if kubeconfig:
            base["KUBECONFIG"] = str(kubeconfig)
        full_env = {**base, **env}
        command = [expand(c, full_env) for c in (spec.command or image.entrypoint)]
        args = [expand(a, full_env) for a in (spec.args or [])]
        argv = command + args
        if not argv:
            raise ConfigError(f"image {spec.image!r} has no local entrypoint: give the container a command, "
                              "or map the image in the node's images file")
        if shutil.which(argv[0], path=full_env["PATH"]) is None and not Path(argv[0]).is_file():
            raise ConfigError(f"executable {argv[0]!r} not found on the image's PATH")
        cwd = spec.working_dir if spec.working_dir and Path(spec.working_dir).is_dir() else str(run.dir)
        logf = open(run.dir / f"{spec.name}.log", "ab")  # handed to the child
        try:
            proc.popen = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        (run.dir / f"{spec.name}.pid").write_text(str(proc.popen.pid))
        proc.started, proc.finished, proc.exit_code, proc.waiting = now(), None, None, None

    def _reap(self, run: PodRun, restart: bool) -> None:
        policy = run.pod.spec.restart_policy or "Always"
        for proc in run.procs.values():
            if proc.popen is None or proc.popen.poll() is None:
                continue
            code = proc.popen.returncode
            proc.exit_code = 128 - code if code < 0 else code
            proc.finished = now()
            proc.popen = None
            pid_file = run.dir / f"{proc.name}.pid"
            pid_file.unlink(missing_ok=True)
            if restart and (policy == "Always" or (policy == "OnFailure" and proc.exit_code != 0)):
                proc.restarts += 1
                delay = min(10.0 * 2 ** (proc.restarts - 1), 300.0)
                proc.next_start = time.monotonic() + delay
                proc.waiting = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container")

    def _finish(self, run: PodRun, restart_policy_done: bool = False) -> None:
        procs = list(run.procs.values())
        done = all(p.popen is None and p.exit_code is not None and (p.waiting is None or restart_policy_done)
                   for p in procs)
        if done:
            run.phase = "Succeeded" if all(p.exit_code == 0 for p in procs) else "Failed"
        elif any(p.popen is not None for p in procs):
            run.phase = "Running"

    def _kill(self, run: PodRun, sig: int) -> None:
        for proc in run.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                proc.signalled = True
                try:
                    os.killpg(proc.popen.pid, sig)
                except ProcessLookupError:
                    pass

    # ---- status ------------------------------------------------------------------------------

    def _container_status(self, spec: Any, proc: Proc) -> dict[str, Any]:
        if proc.popen is not None:
            state = {"running": {"startedAt": iso(proc.started)}}
        elif proc.waiting is not None:
            state = {"waiting": {"reason": proc.waiting[0], "message": proc.waiting[1]}}
        else:
            reason = "Completed" if proc.exit_code == 0 else "Error"
            state = {"terminated": {"exitCode": proc.exit_code, "reason": reason,
                                    "startedAt": iso(proc.started), "finishedAt": iso(proc.finished)}}
        last = {}
        if proc.restarts and proc.exit_code is not None and proc.popen is not None:
            last = {"terminated": {"exitCode": proc.exit_code, "reason": "Error", "finishedAt": iso(proc.finished)}}
        return {"name": spec.name, "image": spec.image, "imageID": f"process://{spec.image}",
                "containerID": f"process://{proc.popen.pid}" if proc.popen else "",
                "ready": proc.popen is not None, "started": proc.popen is not None,
                "restartCount": proc.restarts, "state": state, "lastState": last}

    def _report(self, run: PodRun) -> None:
        pod = run.pod
        statuses = [self._container_status(c, run.procs[c.name]) for c in pod.spec.containers]
        ready = "True" if all(s["ready"] for s in statuses) and run.phase == "Running" else "False"
        ts = iso(now())
        conds = [{"type": t, "status": s, "lastTransitionTime": ts}
                 for t, s in (("PodReadyToStartContainers", "True"), ("Initialized", "True"),
                              ("ContainersReady", ready), ("Ready", ready))]
        status: dict[str, Any] = {
            "phase": run.phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": iso(run.started),
            "containerStatuses": statuses, "qosClass": (pod.status.qos_class if pod.status else None) or "BestEffort",
        }
        if run.reason:
            status["reason"], status["message"] = run.reason, run.message
        key = json.dumps({**status, "c": [(c["type"], c["status"]) for c in conds]}, sort_keys=True, default=str)
        if key == run.last_report:
            return
        # keep lastTransitionTime stable for conditions whose status did not change
        current = {c.type: c for c in (pod.status.conditions or [])} if pod.status else {}
        for c in conds:
            old = current.get(c["type"])
            if old is not None and old.status == c["status"] and old.last_transition_time:
                c["lastTransitionTime"] = iso(old.last_transition_time)
        status["conditions"] = conds
        self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status}, _content_type=SMP)
        run.last_report = key

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": uid}))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # ---- start-up and shut-down ---------------------------------------------------------------

    def _kill_leftovers(self) -> None:
        """Pods of an earlier node process that was killed: stop their processes."""
        for pid_file in self.pods_dir.glob("*/*.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            pid_file.unlink(missing_ok=True)

    def shutdown(self) -> None:
        self.stopping.set()
        if self._log_server is not None:
            self._log_server.shutdown()
            self._log_server.server_close()
        for run in self.runs.values():
            self._kill(run, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                p.popen and p.popen.poll() is None for r in self.runs.values() for p in r.procs.values()):
            time.sleep(0.05)
        for run in self.runs.values():
            self._kill(run, signal.SIGKILL)
            for proc in run.procs.values():
                (run.dir / f"{proc.name}.pid").unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    """`text` matched literally in a glob pattern."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def parse_taint(text: str) -> dict[str, str]:
    """KEY=VALUE:EFFECT or KEY:EFFECT, as kubectl taint takes it."""
    m = re.fullmatch(r"([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"taint {text!r}: expected KEY=VALUE:EFFECT with EFFECT one of "
                                         "NoSchedule, PreferNoSchedule, NoExecute")
    taint = {"key": m.group(1), "effect": m.group(3)}
    if m.group(2):
        taint["value"] = m.group(2)
    return taint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster node", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--name", default="gentask-node")
    parser.add_argument("--root", type=Path, required=True, help="folder for pod logs and kubeconfigs")
    parser.add_argument("--cpu", default=os.environ.get("GENTASK_NODE_CPU", "8"))
    parser.add_argument("--memory", default=os.environ.get("GENTASK_NODE_MEMORY", "16Gi"))
    parser.add_argument("--pods", default=os.environ.get("GENTASK_NODE_PODS", "110"))
    # node disk for pods' ephemeral-storage requests (the chart's pods and the task pods make them);
    # a node that reports none fits no such pod
    parser.add_argument("--ephemeral-storage", default=os.environ.get("GENTASK_NODE_EPHEMERAL_STORAGE", "100Gi"))
    parser.add_argument("--taint", action="append", type=parse_taint, default=[])
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--images", type=Path, help="YAML file mapping image names to local environments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    api = config.new_client_from_config(str(args.kubeconfig))
    kc = yaml.safe_load(args.kubeconfig.read_text())
    cluster = kc["clusters"][0]["cluster"]
    ca = Path(cluster["certificate-authority"]) if cluster.get("certificate-authority") else None
    node = ProcessNode(api, args.name, args.root, {"cpu": args.cpu, "memory": args.memory, "pods": args.pods,
                                                       "ephemeral-storage": args.ephemeral_storage},
                       server=cluster["server"], ca_file=ca, taints=args.taint,
                       labels=dict(item.split("=", 1) for item in args.label),
                       images=ImageMap.load(args.images))
    if ca is not None:
        node.serve_logs(ca.parent)      # the cluster's pki folder: ca.crt beside kubelet.crt

    def stop(signum: int, _frame: Any) -> None:
        node.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
