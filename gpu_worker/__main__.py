"""`python -m gpu_worker <component>`: run one long-lived worker (a component of the step registry:
lid, whisper, diarize, fetch, …) or the live transcription server (`realtime`,
gpu_worker/realtime/server.py) until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from shared.config import Settings, settings_or_exit
from shared.logs import configure_logging

REALTIME = "realtime"
"""The live component: not a queue consumer of the registry, a WebSocket server on REALTIME_PORT."""


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    from gpu_worker.registry_worker import worker_for
    from shared.pipeline import worker_components

    settings = settings or settings_or_exit()
    parser = argparse.ArgumentParser(prog="python -m gpu_worker")
    parser.add_argument("kind", choices=[*worker_components(settings), REALTIME], help="which worker to run")
    args = parser.parse_args(argv)
    configure_logging(settings)
    if args.kind == REALTIME:
        from gpu_worker.realtime.server import main as serve_live

        return serve_live(settings)
    return worker_for(settings, args.kind).run()


if __name__ == "__main__":
    sys.exit(main())
