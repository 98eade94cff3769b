"""`python -m gentask`: the same entry point as the `gentask` command."""

import sys

from gentask.cli import main

sys.exit(main())
