"""gentask api: serve the REST API with uvicorn on PORT (default 8080)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gentask.config import SettingsError, load_settings
from gentask.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    """Serve the API until stopped; 2 for invalid settings."""
    parser = argparse.ArgumentParser(prog="gentask api", description=__doc__)
    parser.add_argument("--host", help="listen address (default GENTASK_API_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default PORT, 8080)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings)
        from gentask.api.app import create_app
        app = create_app(settings)
    except SettingsError as exc:
        print(f"gentask api: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host or settings.api_host, port=args.port or settings.port, log_config=None,
                access_log=False, proxy_headers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
