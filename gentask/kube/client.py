"""One way to reach the API server: the kubeconfig (KUBECONFIG or ~/.kube/config), else the
in-cluster service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config


def api_client() -> client.ApiClient:
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if Path(path.split(os.pathsep)[0]).exists():
        return config.new_client_from_config(path.split(os.pathsep)[0])
    config.load_incluster_config()
    return client.ApiClient()
