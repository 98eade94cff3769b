"""Start-up work a short-lived gentask process skips: every worker pod pays its imports in CPU.

pydantic looks for plugins (the `pydantic` entry-point group) when it builds its first model. Its
loader imports importlib.metadata (with email, zipfile, csv...) and reads the metadata of every
installed distribution: about 20 ms of CPU for a worker pod that needs none of it
(docs/benchmarks.md, "Worker CPU a fake task"). `skip_pydantic_plugin_scan()` looks for that group
itself first, in the entry_points.txt of each distribution on sys.path (a directory listing and a
few small reads). Only when none declares it does pydantic get a loader that returns no plugins;
with a pydantic plugin installed, or a path entry it cannot look into (a zip), pydantic's own
loader runs as before. PYDANTIC_DISABLE_PLUGINS keeps its meaning either way.

Imports make many objects and few cycles: the cyclic garbage collector's passes over them cost a
worker pod about 10 ms. `imports_without_gc()` turns it off while a command's modules load, then
moves what they made to the permanent generation (gc.freeze) and turns it on again.
"""

from __future__ import annotations

import gc
import os
import sys
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

LOADER = "pydantic.plugin._loader"       # what pydantic.plugin._schema_validator imports its get_plugins from
GROUP = "pydantic"


def _declares_group(entry_points_txt: str, group: str) -> bool:
    """The file has a [group] section (as importlib.metadata reads entry_points.txt)."""
    for line in entry_points_txt.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and line[1:-1].strip() == group:
            return True
    return False


def plugins_may_be_installed(paths: Iterable[str] | None = None, group: str = GROUP) -> bool:
    """Some distribution on `paths` (sys.path) declares entry points of `group`, or may: a path
    entry that is a file (a zip or an egg) is not looked into, and counts as "may"."""
    for entry in sys.path if paths is None else paths:
        folder = entry or "."
        try:
            names = os.listdir(folder)
        except NotADirectoryError:
            return True
        except OSError:
            continue        # a missing entry holds no distribution for importlib.metadata either
        for name in names:
            if not name.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue    # no entry points (or an egg-info file, which has none)
            if _declares_group(text, group):
                return True
    return False


def _no_plugins(*_args: object, **_kwargs: object) -> tuple[()]:
    """What pydantic's get_plugins() gives when no plugin is installed (any arguments a later pydantic passes)."""
    return ()


def skip_pydantic_plugin_scan(paths: Iterable[str] | None = None) -> bool:
    """Give pydantic a plugin loader that finds none, when none is installed; True if it was given.

    Call before the first pydantic model is built (later, pydantic's loader has run already)."""
    if LOADER in sys.modules:
        return False
    disabled = os.environ.get("PYDANTIC_DISABLE_PLUGINS") in ("__all__", "1", "true")
    if not disabled and plugins_may_be_installed(paths):
        return False
    loader = types.ModuleType(LOADER, "No pydantic plugins: none is installed (gentask.startup).")
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = loader
    return True


@contextmanager
def imports_without_gc() -> Iterator[None]:
    """No cyclic garbage collection while the block imports; what it made is frozen after (gc.freeze)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()         # module-level objects live as long as the process: no pass needs to look at them
        if was_enabled:
            gc.enable()


__all__ = ["imports_without_gc", "plugins_may_be_installed", "skip_pydantic_plugin_scan"]
