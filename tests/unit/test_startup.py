"""gentask.startup: what a starting process skips, and that it skips nothing it needs."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gentask.startup import imports_without_gc, plugins_may_be_installed


def dist(folder: Path, name: str, entry_points: str | None) -> None:
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)


def test_a_pydantic_plugin_is_found_where_importlib_metadata_finds_it(tmp_path):
    dist(tmp_path, "tool", "[console_scripts]\ntool = tool:main\n")
    dist(tmp_path, "plain", None)
    assert not plugins_may_be_installed([str(tmp_path), str(tmp_path / "missing")])
    dist(tmp_path, "observer", "[console_scripts]\nobs = observer:main\n\n[ pydantic ]\nobserver = observer:plugin\n")
    assert plugins_may_be_installed([str(tmp_path)])


def test_a_path_entry_that_is_a_file_is_not_looked_into_and_may_hold_plugins(tmp_path):
    (tmp_path / "bundle.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    assert plugins_may_be_installed([str(tmp_path / "bundle.zip")])


def run(code: str, *, path: Path | None = None, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(path)} if path else {}), **(env or {})},
                         cwd=path or Path.cwd())
    return json.loads(out.stdout.splitlines()[-1])


LOAD_WORKER = """
    import json, sys
    import gentask.cli
    gentask.cli.load("worker")
    from pydantic import BaseModel
    class Probe(BaseModel):
        x: int
    loader = sys.modules["pydantic.plugin._loader"]
    print(json.dumps({"metadata": "importlib.metadata" in sys.modules, "plugins": len(list(loader.get_plugins())),
                      "probe": Probe(x="1").x, "stub": (loader.__doc__ or "").endswith("(gentask.startup).")}))
"""


def test_with_no_plugin_installed_pydantic_gets_an_empty_loader_and_validates_as_before():
    got = run(LOAD_WORKER)
    assert got == {"metadata": False, "plugins": 0, "probe": 1, "stub": True}


@pytest.mark.parametrize("disabled", [None, "other"])
def test_an_installed_pydantic_plugin_still_loads(tmp_path, disabled):
    """A distribution declaring the `pydantic` group: pydantic's own loader runs, and the plugin sees validation."""
    (tmp_path / "probe_plugin.py").write_text(textwrap.dedent("""
        seen = []
        class Plugin:
            def new_schema_validator(self, schema, schema_type, schema_type_path, schema_kind, config, settings):
                seen.append(schema_type_path.name)
                return None, None, None
        plugin = Plugin()
    """))
    dist(tmp_path, "probe-plugin", "[pydantic]\nprobe = probe_plugin:plugin\n")
    seen = '"seen": "Probe" in __import__("probe_plugin").seen, "stub": ('
    got = run(LOAD_WORKER.replace('"stub": (', seen),
              path=tmp_path, env={"PYDANTIC_DISABLE_PLUGINS": disabled} if disabled else None)
    assert got == {"metadata": True, "plugins": 1, "probe": 1, "seen": True, "stub": False}


def test_pydantic_disable_plugins_needs_no_scan(tmp_path):
    dist(tmp_path, "probe-plugin", "[pydantic]\nprobe = probe_plugin:plugin\n")
    got = run(LOAD_WORKER, path=tmp_path, env={"PYDANTIC_DISABLE_PLUGINS": "__all__"})
    assert got == {"metadata": False, "plugins": 0, "probe": 1, "stub": True}


def test_the_collector_is_paused_while_importing_and_on_again_after():
    assert gc.isenabled()
    with imports_without_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.unfreeze()
    gc.disable()
    try:
        with imports_without_gc():
            pass
        assert not gc.isenabled()       # left as it was found
    finally:
        gc.enable()
        gc.unfreeze()
