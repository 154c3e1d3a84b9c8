"""`python -m gpu_worker lid|whisper`: run one long-lived worker until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from shared.config import Settings, get_settings
from shared.logs import configure_logging


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_worker")
    parser.add_argument("kind", choices=["lid", "whisper"], help="which worker to run")
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    configure_logging(settings)
    if args.kind == "lid":
        from gpu_worker.lid import LidWorker

        return LidWorker(settings).run()
    from gpu_worker.whisper import WhisperWorker

    return WhisperWorker(settings).run()


if __name__ == "__main__":
    sys.exit(main())
