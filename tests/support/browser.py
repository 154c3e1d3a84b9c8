"""A real browser for the tests: headless Chromium (Debian's `chromium`) driven over the DevTools protocol,
as a person uses a page — navigate, read the visible text, click, type, screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from websockets.sync.client import ClientConnection, connect

from tests.conftest import service_missing

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def wait_for(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """The first truthy answer of `check`, asked every 0.25 s; an AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:
            last_error = error
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {last_error}")


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, devtools: ClientConnection) -> None:
        self._socket = devtools
        self._ids = count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        request_id = next(self._ids)
        self._socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=30))
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                result: dict[str, Any] = reply.get("result", {})
                return result

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, *needles: str, timeout: float = 90.0) -> str:
        def all_there() -> str | None:
            text = self.text()
            return text if all(needle in text for needle in needles) else None

        found: str = wait_for(all_there, timeout=timeout, what=f"{needles} on the page")
        return found

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (a user gesture, as a microphone wants)."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        service_missing("chromium is not installed (apt-get install -y chromium)")
    assert path is not None
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


P = TypeVar("P", bound=Page)


@contextlib.contextmanager
def open_page(flags: Sequence[str] = (), page: type[P] = Page) -> Iterator[P]:  # type: ignore[assignment]
    """A fresh headless Chromium (its own profile) with these extra flags, and its first tab as `page`."""
    chromium = chromium_path()
    port = _free_port()
    # Chromium's helper processes may still be writing the profile as it goes: clean up leniently.
    with tempfile.TemporaryDirectory(prefix="speechflow-chromium-", ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [chromium, *FLAGS, *flags, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:

            def page_socket() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    targets = json.loads(response.read())
                return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)

            devtools_url = wait_for(page_socket, timeout=30, what="chromium")
            with connect(devtools_url, max_size=64 * 1024 * 1024) as devtools:
                yield page(devtools)
        finally:
            # The whole browser: its renderer, GPU and crash-handler processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)
