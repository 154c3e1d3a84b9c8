"""An unexpected error answers 500 in the one error shape and leaves the client's keep-alive connection
usable (issue 20.3: after a 500 the next request on the same connection failed with ECONNRESET).

The API runs under uvicorn, as `make up` runs it, on a free port; a route added by the test stands in
for any bug that raises."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn

from shared.core.config import Settings
from tests.support.pipeline import API_KEY, build_stack


@pytest.fixture
def served(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[int]:
    from shared.core.db import migrate

    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'api.db'}")
    migrate(settings)
    stack = build_stack(settings)
    app = stack.client.app

    @app.get("/test-only/raises")  # type: ignore[attr-defined]
    def raises() -> None:
        raise RuntimeError("a bug in a route")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)
    stack.client.close()
    stack.runtime.close()


def test_a_500_is_in_the_error_shape_and_the_connection_stays_usable(served: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    headers = {"x-api-key": API_KEY}
    connection.request("GET", "/test-only/raises", headers=headers)
    failed = connection.getresponse()
    body = json.loads(failed.read())
    assert failed.status == 500
    assert body["error"]["code"] == "internal_error" and "a bug" not in body["error"]["message"]
    first_socket = connection.sock
    assert first_socket is not None, "the server closed the connection after the 500"

    connection.request("GET", "/health", headers=headers)
    after = connection.getresponse()
    assert after.status == 200 and json.loads(after.read()) == {"status": "ok"}
    assert connection.sock is first_socket, "the second request went over the same connection"
    connection.close()
