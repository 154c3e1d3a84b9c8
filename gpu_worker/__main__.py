"""`python -m gpu_worker <component>`: run one long-lived worker (a component of the step registry:
lid, whisper, diarize, fetch, …; the runner is shared.worker.component's, for every component alike)
or the live transcription server (`realtime`, gpu_worker/realtime/server.py) until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from shared.core.config import Settings, settings_or_exit
from shared.core.logs import configure_logging
from shared.domain.registry import worker_components
from shared.worker.component import worker_for

REALTIME = "realtime"
"""The live component: not a queue consumer of the registry, a WebSocket server on REALTIME_PORT."""


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    settings = settings or settings_or_exit()
    parser = argparse.ArgumentParser(prog="python -m gpu_worker")
    parser.add_argument("kind", choices=[*worker_components(settings), REALTIME], help="which worker to run")
    args = parser.parse_args(argv)
    configure_logging(settings)
    if args.kind == REALTIME:
        # lazy: faster-whisper and the live server load only in the live component
        from gpu_worker.realtime.server import main as serve_live

        return serve_live(settings)
    return worker_for(settings, args.kind).run()


if __name__ == "__main__":
    sys.exit(main())
