"""The API's blob routes served over real HTTP in a background thread, for clients (azure-storage-blob)
that cannot be pointed at an in-process ASGI app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from functions.api.blobs import make_blob_router
from shared.core.config import Settings
from shared.storage.local import LocalBlobStore


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_blobs(settings: Settings, store: LocalBlobStore, port: int) -> Iterator[str]:
    """Serve `store`'s blob routes on 127.0.0.1:`port` until the block exits; yields the base URL.

    The port is chosen by the caller, since the signed URLs name it (settings.public_base_url).
    """
    app = FastAPI()
    app.include_router(make_blob_router(settings, store))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, name="blob-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the blob server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
