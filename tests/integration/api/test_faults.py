"""Faults: the cluster unreachable (503 with Retry-After, nothing half-created) and MongoDB down
(creates and results still work, lists answer 503)."""

from __future__ import annotations

import socket
import threading

import yaml

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import IMAGE, TEXT, create, free_port
from tests.support.waits import wait_for


class CuttableProxy:
    """A TCP proxy to the API server that can drop every connection and refuse new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)      # wakes the accept() of the other thread
            except OSError:
                pass
            listener.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _proxied_kubeconfig(cluster, tmp_path) -> tuple[CuttableProxy, str]:
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    server = doc["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = CuttableProxy((host, int(port)))
    proxy.up()
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return proxy, str(path)


def test_cluster_unreachable_is_503_with_retry_after_and_nothing_half_created(start_api, cluster, worker,
                                                                               tmp_path):
    proxy, kubeconfig = _proxied_kubeconfig(cluster, tmp_path)
    api = start_api(kubeconfig=kubeconfig, api_kube_timeout=2)
    c = api.client("alice")
    made = [create(c)["task_id"]]
    proxy.cut()
    for body in (IMAGE, {**IMAGE, "prompt": "another"}):
        r = c.post("/api/v1/ai/image/task", json=body)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and r.json()["success"] is False
    r = c.get("/api/v1/ai/task/result/img-neverexisted")
    assert r.status_code == 503 and "retry-after" in r.headers
    assert c.get(f"/api/v1/ai/task/result/{made[0]}").status_code == 200      # known tasks still answer
    wait_for(lambda: api.client(None).get("/readyz").status_code, 30, until=lambda code: code == 503,
             what="readyz 503")
    proxy.up()
    made.append(create(c)["task_id"])
    wait_for(lambda: api.client(None).get("/readyz").status_code, 30, until=lambda code: code == 200,
             what="readyz 200 again")
    items = worker.api.list_namespaced_custom_object(GROUP, VERSION, worker.namespace, PLURAL)["items"]
    assert sorted(i["metadata"]["name"] for i in items) == sorted(made)
    proxy.cut()


def test_mongodb_down_creates_and_results_work_lists_are_503(start_api):
    dead = f"mongodb://127.0.0.1:{free_port()}/gentask?serverSelectionTimeoutMS=300"
    api = start_api(mongo_url=dead)
    c = api.client("alice")
    task_id = create(c, "text", TEXT)["task_id"]
    r = c.get(f"/api/v1/ai/task/result/{task_id}")
    assert r.status_code == 200 and r.json()["data"]["status"] == "pending"
    r = c.get("/api/v1/ai/tasks")
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert "MongoDB" in r.json()["message"]
    ready = api.client(None).get("/readyz")
    assert ready.status_code == 200 and ready.json()["data"]["mongodb"].startswith("unavailable")
    assert c.post(f"/api/v1/ai/task/{task_id}/cancel").status_code == 200
