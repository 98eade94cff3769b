"""Smoke: the API as operators start it, `gentask api` and `uvicorn gentask.api.app:app`, over a socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.integration.api.conftest import API_KEYS, IMAGE, KEYS, answers, free_port, mongo_url
from tests.support.waits import file_progress, wait_for

COMMANDS = {
    "gentask api": lambda port: [sys.executable, "-m", "gentask", "api"],
    "uvicorn gentask.api.app:app": lambda port: [sys.executable, "-m", "uvicorn", "gentask.api.app:app",
                                                 "--host", "127.0.0.1", "--port", str(port)],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_started_from_the_command_line_it_serves_the_old_endpoints(command, cluster, namespace, tmp_path):
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MONGO_URL": mongo_url(cluster), "PORT": str(port),
           "GENTASK_NAMESPACE": namespace, "GENTASK_API_KEYS": API_KEYS, "GENTASK_API_HOST": "127.0.0.1"}
    log = (tmp_path / "api.log").open("w+")
    proc = subprocess.Popen(COMMANDS[command](port), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(base, proc), 30, what=f"{command} to answer /healthz",
                 progress=file_progress(tmp_path / "api.log"), describe=lambda: _tail(tmp_path / "api.log"))
        c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=10)
        created = c.post("/api/v1/ai/image/task", json=IMAGE).json()
        assert created["success"] is True and created["data"]["status"] == "pending"
        task_id = created["data"]["task_id"]
        assert c.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]["task_id"] == task_id
        wait_for(lambda: c.get("/api/v1/ai/tasks").json()["data"]["total"], 10, until=lambda n: n == 1,
                 what="the task listed", describe=lambda: _tail(tmp_path / "api.log"))
        assert c.delete(f"/api/v1/ai/task/{task_id}").json()["success"] is True
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    log.seek(0)
    text = log.read()
    assert code in (0, -signal.SIGTERM), text            # uvicorn re-raises the signal after a clean shutdown
    assert "shutdown complete" in text.lower()
    assert all(key not in text for key in KEYS.values())


def _tail(log) -> str:
    return "the API's last log lines:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
