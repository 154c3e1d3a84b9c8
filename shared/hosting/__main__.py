"""`python -m shared.hosting`: the local host (what `make up` runs); see shared/hosting/host.py."""

import sys

from shared.hosting.host import main

sys.exit(main())
