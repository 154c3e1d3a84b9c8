"""`python -m gpu_worker <component>`: run one long-lived worker (a component of the step registry:
lid, whisper, diarize, fetch, …) until SIGTERM. The runner is shared.worker.component's, for every
component alike."""

from __future__ import annotations

import argparse
import sys

from shared.core.config import Settings, settings_or_exit
from shared.core.logs import configure_logging
from shared.domain.registry import worker_components
from shared.worker.component import worker_for


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    settings = settings or settings_or_exit()
    parser = argparse.ArgumentParser(prog="python -m gpu_worker")
    parser.add_argument("kind", choices=worker_components(settings), help="which worker to run")
    args = parser.parse_args(argv)
    configure_logging(settings)
    return worker_for(settings, args.kind).run()


if __name__ == "__main__":
    sys.exit(main())
