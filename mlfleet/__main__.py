"""`python -m mlfleet` is the `mlfleet` command (see mlfleet.cli)."""

import sys

from mlfleet.cli import main

sys.exit(main())
