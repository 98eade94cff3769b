"""The `gentask` command: one entry point for every component.

    gentask task create|get|wait|watch|list|cancel|delete|download   tasks over the REST API
    gentask crds [--check]              render the CRD from gentask.domain
    gentask provider try ...            one generation against a configured provider
    gentask operator | api | worker     the components

Each subcommand's module is imported only when it is used, so `gentask worker` does not
load FastAPI and `gentask api` does not load Kopf; while it loads, the garbage collector pauses,
and pydantic's plugin scan is skipped when no plugin is installed (gentask.startup: a worker pod
pays its start in CPU). The local cluster is development tooling outside the product:
`python -m devcluster` from a checkout.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from gentask.startup import imports_without_gc, skip_pydantic_plugin_scan

# subcommand -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "task": ("gentask.cli.task", "create, wait for, list and download tasks over the REST API"),
    "crds": ("gentask.domain.crd", "render the GenerationTask CRD from the domain models"),
    "provider": ("gentask.providers.cli", "try a provider: one generation, saved to a folder"),
    "api": ("gentask.api.__main__", "run the REST API"),
    "worker": ("gentask.worker.__main__", "run one GenerationTask (a Job pod), or the worker pool"),
    "operator": ("gentask.operator.__main__", "run the operator (kopf run -m gentask.operator)"),
}


def usage() -> str:
    """The help text: every subcommand with its one-line description."""
    lines = ["usage: gentask COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand, importing only its module; returns the exit code (2: unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gentask: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(load(name).main(rest) or 0)


def load(name: str) -> ModuleType:
    """A subcommand's module, imported the way a process starting it pays least CPU for (a worker
    pod's start is measured: docs/benchmarks.md): without pydantic's plugin scan when no plugin is
    installed, and with the garbage collector paused meanwhile."""
    skip_pydantic_plugin_scan()
    with imports_without_gc():
        return importlib.import_module(COMMANDS[name][0])


if __name__ == "__main__":
    sys.exit(main())
