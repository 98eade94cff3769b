"""The image, checked without a Docker engine: its build context (.dockerignore), the wheel that
its build stage installs, the entry points that the chart and the operator's Jobs call, and the
Dockerfile's promises (pinned base, non-root user, no compilers in the final stage)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gentask.cli import COMMANDS
from gentask.kube.jobs import RESTRICTED_POD
from tests.support.helm import ROOT, render

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(.dockerignore) -> [(excludes?, regex)], with Docker's rules: last match wins; `*` stays
    within a path segment, `**` crosses them; a pattern that matches a folder covers its files."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"
                    i += 1
                continue
            ch = pattern[i]
            regex += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch))
            if ch == "[":
                end = pattern.index("]", i)
                regex = regex[: -len(re.escape("["))] + pattern[i:end + 1]
                i = end
            i += 1
        rules.append((not negate, re.compile(f"^{regex}$")))
    return rules


def in_context(path: str, rules) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = excludes
    return not excluded


def context_files() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    rules = dockerignore_patterns()
    return {p for p in listed if (ROOT / p).is_file() and in_context(p, rules)}


def test_build_context_holds_the_package_and_its_metadata_only():
    files = context_files()
    tops = {p.split("/")[0] for p in files}
    assert tops == {"pyproject.toml", "README.md", "LICENSE", "gentask"}, tops
    # development infrastructure (the local cluster, the local vendor servers) stays out of the image
    assert not [f for f in files if f.startswith(("devcluster/", "tests/")) or "/testing/" in f]
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "gentask").rglob("*.py")}
    tracked = set(subprocess.run(["git", "ls-files", "gentask"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    assert tracked & package <= files, sorted((tracked & package) - files)[:5]
    rules = dockerignore_patterns()
    for kept_out in (".venv/bin/python", ".devcluster/kubeconfig", ".env", ".git/HEAD", "tests/e2e/conftest.py",
                     "gentask/__pycache__/cli.cpython-311.pyc", "charts/gentask/values.yaml"):
        assert not in_context(kept_out, rules), f"{kept_out} would be sent to the Docker daemon"


def test_everything_the_dockerfile_copies_is_in_the_context():
    files = context_files()
    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources, "no COPY from the context"
    for src in sources:
        assert any(f == src or f.startswith(src.rstrip("/") + "/") for f in files), f"COPY {src}: not in the context"


def test_dockerfile_pins_its_base_runs_as_the_pods_user_and_has_no_compilers_at_run_time():
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    assert len(stages) == 2 and stages[0].startswith("${PYTHON_IMAGE} AS build") and stages[1].startswith(
        "${PYTHON_IMAGE}\n")
    final = stages[1]
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final), "the final stage installs things"
    assert "COPY --from=build /opt/gentask /opt/gentask" in final
    uid = int(re.search(r"^USER (\d+):(\d+)$", final, re.M).group(1))
    assert uid == RESTRICTED_POD["runAsUser"] == 65532, "the image's user differs from the Job pods' runAsUser"
    for dep in [d for d in render() if d["kind"] == "Deployment"]:
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert re.search(r'^ENTRYPOINT \["gentask"\]$', final, re.M)


def test_the_wheel_builds_from_the_build_context(tmp_path: Path):
    src = tmp_path / "context"
    for rel in context_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((ROOT / rel).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("gentask-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for module in ("gentask/cli/__init__.py", "gentask/cli/task.py", "gentask/api/app.py",
                       "gentask/operator/handlers.py", "gentask/worker/run.py", "gentask/storage/__init__.py",
                       # the web console's static files (package data), which /console serves
                       "gentask/api/console/index.html", "gentask/api/console/console.js",
                       "gentask/api/console/console.css"):
            assert module in names, f"{module} is not in the wheel"
        shipped_dev = sorted(n for n in names if n.startswith(("devcluster/", "tests/")) or "/testing/" in n)
        assert not shipped_dev, f"development code in the wheel: {shipped_dev[:5]}"
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert "gentask = gentask.cli:main" in zf.read(f"{dist_info}/entry_points.txt").decode()
        requires = zf.read(f"{dist_info}/METADATA").decode()
    for dep in ("kopf", "fastapi", "uvicorn", "pymongo", "aiohttp", "pyyaml"):
        assert f"Requires-Dist: {dep}" in requires


@pytest.mark.parametrize("argv", [["operator", "--help"], ["api", "--help"], ["worker", "run", "--help"]])
def test_entry_points_the_chart_and_the_jobs_call_exist(argv: list[str]):
    gentask = Path(sys.executable).parent / "gentask"
    proc = subprocess.run([str(gentask), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: gentask" in proc.stdout, proc.stderr
    chart_args = {d["spec"]["template"]["spec"]["containers"][0]["args"][0] for d in render()
                  if d["kind"] == "Deployment"}
    assert chart_args == {"operator", "api"} and chart_args <= set(COMMANDS)
