"""The image build without a Docker engine: cold, unchanged, and after a code change.

    python bench/image.py [--runs-unchanged 1]

Builds the image three ways with hack/build-image.sh (buildah here; Docker where an engine
answers), from a clone of this checkout's HEAD in a temporary folder, so that the code change
touches nothing of yours:

- cold: the Debian base made again from packages (GENTASK_BASE_REFRESH=1: mmdebstrap, then
  imported), so no layer of the build is cached;
- unchanged: the same build again (every layer cached);
- code change: one line added to gentask/__init__.py, so the layers from the package copy on
  are built again.

pip inside the build downloads from the package index whenever its layer is built (the Dockerfile
has no cache mount), so a cold build also measures the network. Writes "## Image build" of
docs/benchmarks.md; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section

ROOT = Path(__file__).resolve().parents[1]


def build(tree: Path, tag: str, log: Path, **env: str) -> float:
    """Seconds hack/build-image.sh took; raises with the end of its log when it fails."""
    t0 = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.run(["bash", "hack/build-image.sh"], cwd=tree, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "IMAGE": tag, **env})
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise SystemExit(f"image build failed ({proc.returncode}); last lines of {log}:\n" + "\n".join(tail))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-unchanged", type=int, default=1, help="unchanged rebuilds to time")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="gentask-bench-image-"))
    tree = work / "tree"
    log = work / "build.log"
    tag = "localhost/gentask-bench:image"
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(tree)], check=True)
        print(f"building from {tree} (log {log})", flush=True)
        cold = build(tree, tag, log, GENTASK_BASE_REFRESH="1")
        print(f"cold: {cold:.0f} s", flush=True)
        unchanged = [build(tree, tag, log) for _ in range(args.runs_unchanged)]
        print(f"unchanged: {', '.join(f'{s:.0f} s' for s in unchanged)}", flush=True)
        init = tree / "gentask" / "__init__.py"
        init.write_text(init.read_text() + f"# bench/image.py code change {time.time()}\n")
        changed = build(tree, tag, log)
        print(f"after a code change: {changed:.0f} s", flush=True)
        size = subprocess.run(["buildah", "images", "--format", "{{.Size}}", tag], capture_output=True,
                              text=True).stdout.strip() if shutil.which("buildah") else ""
    finally:
        subprocess.run(["buildah", "rmi", tag], capture_output=True) if shutil.which("buildah") else None
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()[0]
    body = "\n".join([
        f"Load average (1 min) at start and end: {load0:.1f} and {load1:.1f} on {os.cpu_count()} cores.",
        "",
        "| build | wall time |",
        "|---|---|",
        f"| cold: base made from Debian packages (mmdebstrap) and imported, no layer cached | {cold:.0f} s |",
        f"| unchanged (every layer cached) | {', '.join(f'{s:.0f} s' for s in unchanged)} |",
        f"| after a one-line change in gentask/ (the package layers again) | {changed:.0f} s |",
        "",
        f"Builder: buildah with runc (no Docker engine here); image size {size or 'not read'}. pip inside the "
        "build downloads from the package index whenever its layer is built (no cache mount), and a cold run "
        "fetches the base's Debian packages from deb.debian.org.",
    ])
    write_section("Image build", "python bench/image.py", body)
    print(json.dumps({"cold_s": round(cold), "unchanged_s": [round(s) for s in unchanged],
                      "code_change_s": round(changed), "size": size, "load_average": [load0, load1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
