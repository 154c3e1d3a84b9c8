"""`python -m shared.cli`: the `speechflow` command line."""

import sys

from shared.cli.main import main

sys.exit(main())
