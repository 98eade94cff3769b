"""The image as `make image` builds it (hack/build-image.sh, with buildah: no Docker engine is
needed), run with buildah and runc: the CLI and the entry points the chart and the Jobs call, the
components' imports, the Job pods' user, bytecode for everything the components import, no CA
certificate of the build machine in any layer, and the docker-archive a containerd node imports.

Cold, the build takes about two minutes: the Debian base is made once and cached under
$GENTASK_TOOLS_DIR/images/, the layers in buildah's store; later runs take seconds. Missing tools
are installed (as root); where they cannot be, the tests fail and say which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from gentask.cli import COMMANDS
from gentask.kube.jobs import RESTRICTED_POD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "build-image.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/gentask/gentask:{VERSION}"
RUNTIME = "runc"    # crun cannot run on cgroup v1 hybrid hosts

# Run inside the image: every module that the components import must come from fresh bytecode.
# (The root filesystem is read-only at run time: a missing or stale .pyc is compiled again at
# every start of every pod.)
BYTECODE_CHECK = r'''
import importlib.util, os, sys
import gentask.api.app, gentask.operator, gentask.worker.run
checked, bad = 0, []
for module in list(sys.modules.values()):
    spec = getattr(module, "__spec__", None)
    source = getattr(spec, "origin", None) or ""
    if not source.endswith(".py") or not getattr(spec, "cached", None):
        continue
    checked += 1
    try:
        with open(spec.cached, "rb") as f:
            head = f.read(16)
    except OSError:
        bad.append(f"no bytecode: {source}")
        continue
    flags = int.from_bytes(head[4:8], "little")
    if head[:4] != importlib.util.MAGIC_NUMBER:
        bad.append(f"bytecode of another Python: {source}")
    elif flags & 0b11 == 0b11:
        if importlib.util.source_hash(open(source, "rb").read()) != head[8:16]:
            bad.append(f"stale (hash): {source}")
    elif not flags & 1:
        st = os.stat(source)
        if (int.from_bytes(head[8:12], "little"), int.from_bytes(head[12:16], "little")) != (
                int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
            bad.append(f"stale (timestamp): {source}")
print(checked)
print(*bad, sep="\n")
'''


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Built:
    image: str
    archive: Path
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The image, built by the script that `make image` runs; the build's output goes to a log."""
    log = tmp_path_factory.mktemp("image") / "build-image.log"
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_ARCHIVE", "VERSION")}
    env.update(IMAGE=IMAGE, GENTASK_IMAGE_BUILDER="buildah", GENTASK_OCI_RUNTIME=RUNTIME)
    start = time.monotonic()
    with log.open("w") as err:
        proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=1700)
    output = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"hack/build-image.sh failed (exit {proc.returncode}); the end of its output "
                    f"(all of it in {log}):\n{tail(output)}", pytrace=False)
    assert shutil.which("buildah"), "the build succeeded but buildah is not on PATH"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"hack/build-image.sh printed no archive path on stdout:\n{tail(output)}"
    return Built(IMAGE, Path(lines[-1]), time.monotonic() - start)


def buildah(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def overlay_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def container_layer(container_id: str) -> str | None:
    """The storage layer under a buildah container (its overlay mount is <graph root>/overlay/<layer>/merged)."""
    try:
        graph_root = json.loads(buildah("info").stdout)["store"]["GraphRoot"]
        records = json.loads((Path(graph_root) / "overlay-containers" / "containers.json").read_text())
    except (OSError, KeyError, ValueError, AssertionError):
        return None
    return next((r.get("layer") for r in records if r.get("id") == container_id), None)


@pytest.fixture(scope="module")
def container(built: Built):
    """One working container of the image; removed after the module's tests, and checked gone with its mount."""
    name = f"gentask-image-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--pull=never", "--quiet", "--name", name, built.image)
    container_id = json.loads(buildah("inspect", "--type", "container", name).stdout)["ContainerID"]
    layer = container_layer(container_id)
    try:
        yield name
    finally:
        buildah("rm", name)
        left = [c for c in json.loads(buildah("containers", "--all", "--json").stdout or "null") or []
                if c.get("id") == container_id or c.get("containername") == name]
        assert not left, f"container {name} is still there after buildah rm: {left}"
        if layer:
            assert f"/overlay/{layer}/merged" not in overlay_mounts(), f"{name}'s overlay mount is still mounted"


def run_in(container: str, *argv: str) -> subprocess.CompletedProcess:
    """argv in the container, as the image's user (USER 65532:65532), with the image's environment."""
    return buildah("run", "--runtime", RUNTIME, container, "--", *argv, check=False, timeout=120)


def test_the_script_prints_the_archive_it_wrote(built: Built):
    tools = Path(os.environ.get("GENTASK_TOOLS_DIR", Path.home() / ".cache" / "gentask" / "tools"))
    assert built.archive == tools / "images" / f"gentask-{VERSION}.tar"
    assert built.archive.is_file() and built.archive.stat().st_size > 50_000_000
    print(f"image build (as make image): {built.seconds:.1f} s")


def test_gentask_help_lists_every_component(container: str):
    proc = run_in(container, "gentask", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gentask")
    for command in COMMANDS:
        assert re.search(rf"^  {command}\s", proc.stdout, re.M), f"{command} is not in gentask --help"


@pytest.mark.parametrize("argv", [["operator", "--help"], ["api", "--help"], ["worker", "run", "--help"]])
def test_the_entry_points_the_chart_and_the_jobs_call_answer(container: str, argv: list[str]):
    proc = run_in(container, "gentask", *argv)
    assert proc.returncode == 0 and "usage: gentask" in proc.stdout, proc.stdout + proc.stderr


def test_the_components_import(container: str):
    imports = "import gentask.operator, gentask.api.app, gentask.worker.run; print('ok')"
    proc = run_in(container, "python", "-c", imports)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_it_runs_as_the_job_pods_user(container: str):
    proc = run_in(container, "id")
    assert proc.returncode == 0, proc.stderr
    uid, gid = RESTRICTED_POD["runAsUser"], RESTRICTED_POD["runAsGroup"]
    assert re.match(rf"uid={uid}\b.* gid={gid}\b", proc.stdout), proc.stdout
    assert uid == 65532


def test_everything_the_components_import_has_fresh_bytecode(container: str):
    proc = run_in(container, "python", "-c", BYTECODE_CHECK)
    assert proc.returncode == 0, proc.stderr
    checked, *bad = proc.stdout.strip().splitlines()
    assert int(checked) > 300, f"only {checked} modules checked"
    assert not bad, f"{len(bad)} of {checked} modules would compile at every start:\n" + "\n".join(bad[:20])


def test_the_archive_is_a_docker_archive_of_the_image(built: Built):
    with tarfile.open(built.archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert len(manifest) == 1 and manifest[0]["RepoTags"] == [built.image], manifest
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        names = set(tar.getnames())
    missing = [layer for layer in manifest[0]["Layers"] if layer not in names]
    assert not missing, f"layers the manifest names but the archive lacks: {missing}"
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["gentask"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest[0]["Layers"])


def test_no_certificate_of_the_build_machine_is_in_a_layer(built: Built):
    """The extra CA certificates reach pip as a build secret, mounted for one RUN: none is in the image."""
    extras = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
    if not extras:
        pytest.skip("this machine has no extra CA certificates (/usr/local/share/ca-certificates)")
    needles = []
    for crt in extras:
        body = [line for line in crt.read_text().splitlines() if line and not line.startswith("-----")]
        needles += [line.encode() for line in body[1:3]]   # lines past the common header of every certificate
    found, overlap, previous = set(), max(map(len, needles)), b""
    with built.archive.open("rb") as f:
        while chunk := f.read(8 << 20):
            window = previous + chunk
            found |= {n for n in needles if n in window}
            previous = chunk[-overlap:]
    assert not found, f"the image holds this machine's CA certificates ({len(found)} lines found)"
