"""The Kopf operator: `kopf run -m gentask.operator` (or `gentask operator`).

This module only imports the handler modules, so that Kopf registers them.
"""

from gentask.operator import handlers  # noqa: F401 - importing it registers the Kopf handlers
