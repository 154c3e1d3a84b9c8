"""`python -m gpu_worker.realtime`: the live transcription server, as the local host's `realtime`
component runs it."""

from __future__ import annotations

import sys

from gpu_worker.realtime.server import main
from shared.core.config import settings_or_exit
from shared.core.logs import configure_logging


def run() -> int:
    settings = settings_or_exit()
    configure_logging(settings)
    return main(settings)


if __name__ == "__main__":
    sys.exit(run())
