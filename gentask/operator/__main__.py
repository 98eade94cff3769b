"""gentask operator: run the Kopf operator in one process (standalone: one active replica).

Kopf's peering is off (`standalone`): run one replica (the chart's Deployment has replicas: 1
and strategy Recreate). Two replicas would both act on every task; the Job names are
deterministic so nothing is created twice, but status writes would race.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """`gentask operator`: run Kopf with gentask's handlers until stopped."""
    parser = argparse.ArgumentParser(prog="gentask operator", description=__doc__)
    parser.parse_args(argv)
    import kopf

    from gentask.config import SettingsError, load_settings
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"gentask operator: {exc}", file=sys.stderr)
        return 2
    import gentask.operator  # noqa: F401 - registers the handlers
    if settings.watch_namespaces:
        kopf.run(standalone=True, namespaces=settings.watch_namespaces)
    else:
        kopf.run(standalone=True, clusterwide=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
