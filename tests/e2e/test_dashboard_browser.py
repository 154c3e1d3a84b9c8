"""The ops dashboard in a real browser: headless Chromium (Debian's `chromium`) against `streamlit run`
over a seeded database, driven over the DevTools protocol. It checks the text a person reads on the
page and saves screenshots under .test-artifacts/.

Streamlit draws its page from a websocket after load, so `--dump-dom` alone sees an empty shell; the
test waits on `document.body.innerText` instead, as a person waits for the page to fill in.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from shared.config import Settings
from tests.conftest import REPO, service_missing
from tests.integration.test_dashboard import OPERATOR_KEY, TRANSCRIPT, Seeded, fake_live_component, seed

ARTIFACTS = REPO / ".test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
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
    """One Chromium tab over the DevTools protocol: navigate, read the visible text, screenshot."""

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

    def sign_in(self, key: str) -> None:
        """Give the operator key on the dashboard's sign-in form, as a person types it, then Enter."""
        self.wait_for_text("Operator key")
        focus = "(() => { const i = document.querySelector('input[type=password]'); i && i.focus(); return !!i; })()"
        wait_for(lambda: self.call("Runtime.evaluate", expression=focus)["result"].get("value"), timeout=20, what="key")
        self.call("Input.insertText", text=key)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return str(result.get("result", {}).get("value", ""))

    def wait_for_text(self, *needles: str, timeout: float = 40.0) -> str:
        def all_there() -> str | None:
            text = self.text()
            return text if all(needle in text for needle in needles) else None

        found: str = wait_for(all_there, timeout=timeout, what=f"{needles} on the page")
        return found

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        service_missing("chromium is not installed (apt-get install -y chromium)")
    assert path is not None
    return path


@pytest.fixture
def realtime_port() -> int:
    """Where the dashboard looks for the live component: nothing answers there unless a test serves it."""
    return free_port()


@pytest.fixture
def live_component(realtime_port: int) -> Iterator[None]:
    """A fake live component (its /ready and /metrics) where the dashboard looks for one."""
    with fake_live_component(realtime_port):
        yield


@pytest.fixture
def dashboard(make_settings: Callable[..., Settings], realtime_port: int) -> Iterator[tuple[str, Seeded]]:
    settings = make_settings()
    seeded = seed(settings)
    port = free_port()
    environment = {
        **os.environ,
        "SPEECHFLOW_HOME": str(settings.speechflow_home),
        "PYTHONPATH": str(REPO),
        "DASHBOARD_OPERATOR_KEY": OPERATOR_KEY,
        "REALTIME_HOST": "127.0.0.1",
        "REALTIME_PORT": str(realtime_port),
    }
    environment.pop("DATABASE_URL", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "dashboard" / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).status == 200,
            timeout=60,
            what="streamlit",
        )
        yield base, seeded
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    port = free_port()
    # Chromium's helper processes may still be writing the profile as it goes: clean up leniently.
    with tempfile.TemporaryDirectory(prefix="speechflow-chromium-", ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
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
                yield Page(devtools)
        finally:
            # The whole browser: its renderer, GPU and crash-handler processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)


def test_a_person_sees_jobs_queues_and_a_job_drill_down(dashboard: tuple[str, Seeded], page: Page) -> None:
    base, seeded = dashboard
    ARTIFACTS.mkdir(exist_ok=True)

    page.open(f"{base}/?view=Overview")
    page.sign_in(OPERATOR_KEY)
    page.wait_for_text("Total jobs", "Active (queued + processing)", "Status breakdown")
    page.wait_for_text("Live transcription", "Live sessions open / capacity", "not running", "Live jobs in window")
    page.screenshot(ARTIFACTS / "dashboard-overview.png")

    page.open(f"{base}/?view=Queues")
    page.sign_in(OPERATOR_KEY)
    page.wait_for_text("Queue depth now", "Dead letters: whisper-jobs (1)")
    page.screenshot(ARTIFACTS / "dashboard-queues.png")

    page.open(f"{base}/?view=Job+detail&job={seeded.failed}")
    page.sign_in(OPERATOR_KEY)
    # Streamlit fills the page in as it goes: wait for everything that should be read, together.
    page.wait_for_text(
        f"Job {seeded.failed}",
        "TRANSCRIBE: not an audio file",
        "🔴 failed",
        "No transcript yet.",
    )

    page.open(f"{base}/?view=Job+detail&job={seeded.completed}")
    page.sign_in(OPERATOR_KEY)
    page.wait_for_text(
        f"Job {seeded.completed}",
        TRANSCRIPT,
        "🟢 completed",
        "file meeting.wav",
        "Uploaded audio",
    )
    players = "document.querySelectorAll('audio, [data-testid=\"stAudio\"]').length"
    wait_for(
        lambda: page.call("Runtime.evaluate", expression=players)["result"]["value"] >= 1,
        timeout=20,
        what="a player",
    )
    page.screenshot(ARTIFACTS / "dashboard-job-detail.png")
    assert (ARTIFACTS / "dashboard-job-detail.png").stat().st_size > 10_000


def test_a_person_sees_the_live_component_on_the_overview(
    live_component: None, dashboard: tuple[str, Seeded], page: Page
) -> None:
    base, _ = dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    page.open(f"{base}/?view=Overview")
    page.sign_in(OPERATOR_KEY)
    text = page.wait_for_text("Live transcription", "Live sessions open / capacity", "3 / 8", "Partials skipped")
    assert "not running" not in text
    page.wait_for_text("Turn latency p50", "0.50 s", "Turn latency p95", "0.75 s", "latency over 20 turns")
    page.screenshot(ARTIFACTS / "dashboard-live.png")
