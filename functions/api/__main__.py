"""`python -m functions.api`: the API under uvicorn on its own (the local host's `api` component starts
the same factory by name)."""

from __future__ import annotations

import sys

import uvicorn

from functions.api import create_app
from shared.core.config import settings_or_exit
from shared.core.logs import configure_logging


def main() -> int:
    settings = settings_or_exit()
    configure_logging(settings)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
