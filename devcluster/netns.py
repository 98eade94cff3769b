"""The real node's namespaces: a holder that makes them, and a forwarder that reaches into them.

``hold`` runs as ``unshare --net --mount --propagation private python -m devcluster.netns hold``:
the process is the first of a new network namespace and a new mount namespace whose mounts are
all private (nothing mounted in it shows on the host, nor the other way). It sets the namespaces
up, writes ``<dir>/netns.json`` and sleeps until SIGTERM; every component of a real-node cluster
joins them with ``nsenter --net=/proc/<holder>/ns/net --mount=/proc/<holder>/ns/mnt``:

* network: ``lo`` up, and a link ``gentask0`` (one end of a veth pair whose other end stays in
  the namespace too) holding the node's address (NODE_IP/32), with a route for the Service range
  so that connects to ClusterIPs are routed (kube-proxy's DNAT does the rest). There is no other
  link and no default route: nothing in the namespace reaches out, and the namespace goes when
  its last process does.
* mounts: ``/var`` and ``/run`` are overlays whose upper layers live under ``<dir>/overlay``: what
  containerd, runc, CNI and the kubelet write to the host paths they hard-code
  (/run/containerd/s, /var/lib/cni, /var/log/containers, /run/xtables.lock, ...) lands there and
  never on the host. The kernel tunables the kubelet insists on (vm.overcommit_memory=1,
  kernel.panic=10, kernel.panic_on_oops=1, ...) are files bind-mounted over /proc/sys, so the
  kubelet runs with protectKernelDefaults and the host's values never change.

``forward`` lets host-side clients keep their 127.0.0.1 URLs: it binds its sockets on the host's
loopback first, then moves itself into the cluster's network namespace (setns; sockets keep the
namespace they were made in) and relays each accepted connection to 127.0.0.1:<same port>
there. Such a port starts listening only once its component inside answers, so a host-side probe
of the port tells the truth about the component. The other way, it listens on NODE_IP:<port> in
the namespace and relays to the host's 127.0.0.1:<port>, for what runs on the host and pods need
(FerretDB).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

NODE_IP = "10.200.0.1"
NODE_NAME = "gentask-node"  # the name the process node registers too: tests look it up
LINK = "gentask0"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
# what the kubelet's protectKernelDefaults checks (pkg/kubelet/cm/container_manager_linux.go)
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
OVERLAYS = ("/var", "/run")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {source} on {target}")


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


# ---- hold -----------------------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _detach_under(tops: tuple[str, ...], keep: Path) -> None:
    """Detach (in this namespace only) the host's mounts below the folders about to be overlaid:
    a private copy would otherwise pin them (another tool's overlays under /var/lib/containers,
    say) for as long as the cluster runs. A mount that holds the cluster's folder stays."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point.startswith(top + "/") for top in tops) and not str(keep).startswith(point.rstrip("/") + "/"):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        _libc.umount2(point.encode(), MNT_DETACH)  # best effort: a mount already gone is fine


def setup(folder: Path, service_cidr: str) -> dict[str, object]:
    """Run inside the new namespaces: links, routes, overlays, kernel tunables."""
    _ip("link", "set", "lo", "up")
    # no dummy driver on every kernel: a veth pair whose both ends stay in the namespace serves
    _ip("link", "add", LINK, "type", "veth", "peer", "name", LINK + "p")
    _ip("addr", "add", f"{NODE_IP}/32", "dev", LINK)
    _ip("link", "set", LINK + "p", "up")
    _ip("link", "set", LINK, "up")
    _ip("route", "add", service_cidr, "dev", LINK)
    _detach_under(OVERLAYS, keep=folder)
    for target in OVERLAYS:
        upper, work = folder / "overlay" / target.strip("/") / "upper", folder / "overlay" / target.strip("/") / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        mount("overlay", target, "overlay", 0, f"lowerdir={target},upperdir={upper},workdir={work}")
    changed = {}
    sysctl_dir = folder / "sysctl"
    sysctl_dir.mkdir(parents=True, exist_ok=True)
    for key, want in KUBELET_SYSCTLS.items():
        path = Path("/proc/sys") / key
        if path.read_text().strip() != want:
            value = sysctl_dir / key.replace("/", ".")
            value.write_text(want + "\n")
            mount(str(value), str(path), None, MS_BIND)
            changed[key.replace("/", ".")] = want
    return {"pid": os.getpid(), "net": ns_inode("self", "net"), "mnt": ns_inode("self", "mnt"),
            "node_ip": NODE_IP, "sysctls": changed}


def hold(folder: Path, service_cidr: str) -> int:
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    info = setup(folder, service_cidr)
    tmp = folder / "netns.json.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(folder / "netns.json")
    print(f"namespaces ready: {json.dumps(info)}", flush=True)
    while not stop:
        signal.pause()
    return 0


# ---- forward --------------------------------------------------------------------------------

async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(262144):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


class Forwarder:
    """Relays in both directions between the host's namespace and the cluster's.

    ``inward`` ports: host 127.0.0.1:PORT → cluster 127.0.0.1:PORT (the API server, etcd).
    ``outward`` ports: cluster NODE_IP:PORT → host 127.0.0.1:PORT (what runs on the host and pods
    need, e.g. FerretDB). The process lives in the cluster's namespace; a socket is made in the
    host's by switching the thread there for the one call (sockets keep the namespace they were
    made in)."""

    def __init__(self, netns: str, inward: list[int], outward: list[int]) -> None:
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.inward_socks = [self._listener("127.0.0.1", p) for p in inward]  # still in the host's namespace
        setns(netns, CLONE_NEWNET)
        self.cluster_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.outward_socks = [self._listener(NODE_IP, p) for p in outward]

    @staticmethod
    def _listener(host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.setblocking(False)
        return s

    def _host_socket(self) -> socket.socket:
        _check(_libc.setns(self.host_ns, CLONE_NEWNET), "setns host")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _check(_libc.setns(self.cluster_ns, CLONE_NEWNET), "setns cluster")
        s.setblocking(False)
        return s

    async def _connect(self, port: int, outward: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not outward:
            return await asyncio.open_connection("127.0.0.1", port)
        sock = self._host_socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _relay(self, port: int, outward: bool, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await self._connect(port, outward)
        except OSError:
            client_w.transport.abort()
            return
        for w in (client_w, up_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for w in (client_w, up_w):
                w.close()

    async def _serve(self, sock: socket.socket, outward: bool) -> asyncio.Server:
        port = sock.getsockname()[1]
        while not outward:  # inward: listen once the component inside answers
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        sock.listen(1024)
        return await asyncio.start_server(lambda r, w: self._relay(port, outward, r, w), sock=sock)

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(self._serve(s, False)) for s in self.inward_socks]
        tasks += [asyncio.create_task(self._serve(s, True)) for s in self.outward_socks]
        await stop.wait()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is None:
                t.result().close()
            else:
                t.cancel()


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.netns", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold", help="set up the namespaces this process is in, and keep them")
    h.add_argument("--dir", type=Path, required=True)
    h.add_argument("--service-cidr", required=True)
    f = sub.add_parser("forward", help="relay ports between the host's network namespace and the cluster's")
    f.add_argument("--netns", required=True, help="e.g. /proc/<holder pid>/ns/net")
    f.add_argument("--inward", type=_ports, default=[], help="host 127.0.0.1:PORT to the cluster's 127.0.0.1:PORT")
    f.add_argument("--outward", type=_ports, default=[], help=f"the cluster's {NODE_IP}:PORT to host 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    if args.cmd == "hold":
        return hold(args.dir, args.service_cidr)
    asyncio.run(Forwarder(args.netns, args.inward, args.outward).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
