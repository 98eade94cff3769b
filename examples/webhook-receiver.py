"""A webhook receiver that verifies gentask's signatures (Standard Webhooks) and dedupes by id.

    pip install standardwebhooks
    GENTASK_WEBHOOK_SIGNING_KEY=whsec_... python examples/webhook-receiver.py 8000

Prints one JSON line per new event (type, subject, status); answers 401 to a request whose
signature does not verify, 204 otherwise (a repeated id too: delivery is at least once).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

hook = Webhook(os.environ["GENTASK_WEBHOOK_SIGNING_KEY"])      # whsec_<base64>
seen: set[str] = set()


class Receiver(BaseHTTPRequestHandler):
    """One POST is one event."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        """Verify, dedupe, print, answer."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = hook.verify(body, dict(self.headers))          # checks webhook-id, -timestamp, -signature
        except WebhookVerificationError:
            self.send_response(401)
            self.end_headers()
            return
        if event["id"] not in seen:                                 # the same event may come again: once is enough
            seen.add(event["id"])
            print(json.dumps({"type": event["type"], "subject": event["subject"],
                              "status": event["data"]["status"]}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        """No access log."""


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Receiver).serve_forever()
