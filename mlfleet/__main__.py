"""`python -m mlfleet` is the drift run (the only command so far)."""

import sys

from mlfleet.drift import main

sys.exit(main())
