"""Helm as the chart tests call it: the tool cache's helm, with its caches out of the home folder."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import yaml

from devcluster import tools_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gentask"
CRD_NAME = "generationtasks.gentask.io"
KUBE_VERSION = "1.36.3"      # for `helm template`, which cannot ask a cluster


def helm_bin() -> str:
    return str(tools_dir() / "bin" / "helm")


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/gentask-helm/cache", "HELM_CONFIG_HOME": "/tmp/gentask-helm/config",
           "HELM_DATA_HOME": "/tmp/gentask-helm/data"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run([helm_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(*args: str, values: dict | None = None, tmp: Path | None = None) -> list[dict]:
    """`helm template` of the chart: the manifests as dicts."""
    extra: list[str] = []
    if values is not None:
        path = (tmp or Path("/tmp")) / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    out = helm("template", "t", str(CHART), "--namespace", "gentask", "--kube-version", KUBE_VERSION,
               *extra, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
