"""The ops dashboard in a real browser: headless Chromium (Debian's `chromium`) against `streamlit run`
over a seeded database, driven over the DevTools protocol. It checks the text a person reads on the
page and saves screenshots under .test-artifacts/.

Streamlit draws its page from a websocket after load, so `--dump-dom` alone sees an empty shell; the
test waits on `document.body.innerText` instead, as a person waits for the page to fill in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from shared.core.config import Settings
from tests.conftest import REPO
from tests.e2e.conftest import free_port
from tests.integration.dashboard.test_dashboard import OPERATOR_KEY, TRANSCRIPT, Seeded, fake_live_component, seed
from tests.support.browser import Page as BrowserPage
from tests.support.browser import open_page, wait_for

ARTIFACTS = REPO / ".test-artifacts"


class Page(BrowserPage):
    """A tab on the dashboard, which asks an operator to sign in."""

    def open(self, url: str) -> None:
        """Navigate and wait until the new document has loaded: the old page's text must not be read as
        the new one's (its sign-in form looks the same)."""
        self.evaluate("document.body && document.body.setAttribute('data-left', '1')")
        super().open(url)
        wait_for(
            lambda: self.evaluate(
                "document.readyState === 'complete' && !(document.body && document.body.hasAttribute('data-left'))"
            ),
            timeout=60,
            what=f"{url} to load",
        )

    def sign_in(self, key: str) -> None:
        """Give the operator key on the dashboard's sign-in form, as a person types it, then Enter; again if
        the form is still there (Streamlit may redraw it while the first key goes in)."""
        focus = "(() => { const i = document.querySelector('input[type=password]'); i && i.focus(); return !!i; })()"
        for _ in range(3):
            self.wait_for_text("Operator key")
            wait_for(lambda: self.evaluate(focus), timeout=60, what="the key field")
            self.call("Input.insertText", text=key)
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
            try:
                wait_for(lambda: "Operator key" not in self.text(), timeout=20, what="the sign-in to go")
                return
            except AssertionError:
                continue
        raise AssertionError("the dashboard kept asking for the operator key")


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
def page() -> Iterator[Page]:
    with open_page(["--window-size=1400,1000"], Page) as tab:
        yield tab


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
        timeout=60,
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
