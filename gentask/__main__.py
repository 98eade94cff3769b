import sys

from gentask.cli import main

sys.exit(main())
