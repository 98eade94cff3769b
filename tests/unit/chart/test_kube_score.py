"""kube-score (a third-party chart linter, built by `make tools`) on the rendered chart: it finds
nothing, and what it would find without the chart's kube-score/ignore annotations is exactly the
deliberate list that values.yaml explains ("kube-score"). A new finding fails here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from devcluster import tools_dir
from tests.support.helm import CHART, KUBE_VERSION, helm

KUBERNETES = "v" + ".".join(KUBE_VERSION.split(".")[:2])

# (kind, name) -> the checks it fails on purpose, for each render tested. values.yaml says why.
OPERATOR = {"deployment-strategy", "deployment-replicas", "container-resources", "container-image-pull-policy"}
DELIBERATE = {
    "default": {("Deployment", "t-gentask-api"): {"deployment-replicas", "container-resources",
                                                  "container-image-pull-policy"},
                ("Deployment", "t-gentask-operator"): OPERATOR,
                ("NetworkPolicy", "t-gentask-workers"): {"networkpolicy-targets-pod"}},
    "pool, 3 API pods": {("Deployment", "t-gentask-api"): {"container-resources", "container-image-pull-policy"},
                         ("Deployment", "t-gentask-operator"): OPERATOR,
                         ("Deployment", "t-gentask-pool"): {"container-resources", "container-image-pull-policy"},
                         ("NetworkPolicy", "t-gentask-workers"): {"networkpolicy-targets-pod"}},
}
RENDERS = {"default": [], "pool, 3 API pods": ["--set", "operator.executor=pool", "--set", "api.replicas=3"]}


def kube_score_bin() -> Path:
    path = tools_dir() / "bin" / "kube-score"
    assert path.exists(), f"{path} is missing: `make tools` builds it (hack/build-tools.sh kube-score)"
    return path


def rendered(*args: str) -> str:
    return helm("template", "t", str(CHART), "--namespace", "gentask", "--kube-version", KUBE_VERSION, *args).stdout


def findings(manifest: str, *flags: str) -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> ids of the checks kube-score grades below OK (CRITICAL, WARNING, ...)."""
    proc = subprocess.run([str(kube_score_bin()), "score", "--kubernetes-version", KUBERNETES, "-o", "json",
                           *flags, "-"], input=manifest, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr        # 1: it found something
    found: dict[tuple[str, str], set[str]] = {}
    for obj in json.loads(proc.stdout):
        failed = {c["check"]["id"] for c in obj["checks"] if not c["skipped"] and c["grade"] < 10}
        if failed:
            found[(obj["type_meta"]["kind"], obj["object_meta"]["name"])] = failed
    return found


@pytest.mark.parametrize("render", list(RENDERS))
def test_kube_score_finds_nothing_in_the_chart(render: str):
    assert findings(rendered(*RENDERS[render])) == {}


@pytest.mark.parametrize("render", list(RENDERS))
def test_without_the_charts_ignores_it_finds_exactly_the_deliberate_ones(render: str):
    assert findings(rendered(*RENDERS[render]), "--disable-ignore-checks-annotations") == DELIBERATE[render]


def test_values_yaml_explains_every_deliberate_finding():
    text = (CHART / "values.yaml").read_text()
    section = text[text.index("# kube-score ("):]
    explained = set(re.findall(r"^#   ([a-z-]+(?:, [a-z-]+)*) \(", section, re.M))
    ids = {i for line in explained for i in line.split(", ")}
    assert ids == {i for render in DELIBERATE.values() for checks in render.values() for i in checks}


def test_an_ignore_lasts_only_while_its_value_causes_it():
    """Set the CPU limit and Always, and the annotation drops them; drop the memory limit, and kube-score
    reports it: the CPU limit's ignore never hides another gap of container-resources."""
    fixed = rendered("--set-string", "api.resources.limits.cpu=1", "--set", "image.pullPolicy=Always",
                     "--set", "api.replicas=2")
    api = next(d for d in yaml.safe_load_all(fixed) if d and d["kind"] == "Deployment"
               and d["metadata"]["name"] == "t-gentask-api")
    assert "annotations" not in api["metadata"]
    assert findings(fixed, "--disable-ignore-checks-annotations")[("Deployment", "t-gentask-operator")] == {
        "deployment-strategy", "deployment-replicas", "container-resources"}
    assert ("Deployment", "t-gentask-api") not in findings(fixed, "--disable-ignore-checks-annotations")
    gap = rendered("--set", "api.resources.limits.memory=null")
    assert findings(gap) == {("Deployment", "t-gentask-api"): {"container-resources"}}
