"""`python -m fwatchdog` runs the same entry point as the `fwatchdog` command."""

import sys

from fwatchdog.cli import main

sys.exit(main())
