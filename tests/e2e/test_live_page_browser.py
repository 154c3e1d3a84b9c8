"""The live-captions page (GET /live) in a real browser against the running stack with its live component:
headless Chromium (Debian's `chromium`) with a fake microphone that plays a fixture clip followed by
silence, driven over the DevTools protocol as a person uses the page (the key in the address, a click on
Start). The page gets a client secret, opens /v1/realtime in the browsers' subprotocol, sends the
microphone as 24 kHz PCM16 from an AudioWorklet, and must show a final caption with the clip's words.
A screenshot is saved under .test-artifacts/."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import REPO, service_missing
from tests.e2e.conftest import RunningStack, free_port
from tests.e2e.test_listen_cli import wait_live
from tests.support.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.model]

ARTIFACTS = REPO / ".test-artifacts"
CLIP = REPO / "tests" / "fixtures" / "audio" / "en" / "librivox-0870.wav"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,800",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


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

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (a user gesture, as the microphone wants)."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


def microphone_wav(path: Path, silence_seconds: float = 4.0) -> Path:
    """The clip, then silence (so the turn ends), as 16-bit mono 16 kHz: what the fake microphone plays."""
    from shared.engines.audio import decode

    audio = np.concatenate(
        [np.zeros(8000, np.float32), decode(CLIP), np.zeros(int(16000 * silence_seconds), np.float32)]
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {"REALTIME_PORT": str(free_port()), "WHISPER_WORKERS": "1"}
    with start_stack(components=("api", "router", "whisper", "realtime"), env=env) as running:
        wait_live(running)
        yield running


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        service_missing("chromium is not installed (apt-get install -y chromium)")
    assert chromium is not None
    port = free_port()
    microphone = microphone_wav(tmp_path / "microphone.wav")
    with tempfile.TemporaryDirectory(prefix="speechflow-chromium-", ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--use-file-for-fake-audio-capture={microphone}",
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)


def test_the_live_page_captions_the_microphone(stack: RunningStack, page: Page) -> None:
    key = stack.env["SPEECHFLOW_API_KEY"]
    page.call("Page.navigate", url=f"{stack.base_url}/live?key={key}&language=en")
    wait_for(lambda: page.evaluate("document.readyState") == "complete", timeout=20, what="the page")
    assert page.evaluate("document.getElementById('key').value") == key
    page.click("#start")

    ARTIFACTS.mkdir(exist_ok=True)
    partials: list[str] = []

    def final_caption() -> str | None:
        finals = str(page.evaluate("document.getElementById('finals').innerText") or "")
        error = str(page.evaluate("document.getElementById('error').innerText") or "")
        assert not error, error
        partial = str(page.evaluate("document.getElementById('partial').innerText") or "").strip()
        if partial and not finals and (not partials or partial != partials[-1]):
            partials.append(partial)
            if len(partials) == 1:
                page.screenshot(ARTIFACTS / "live-captions-partial.png")
        return finals if "dashwood" in finals.lower() else None

    finals = wait_for(final_caption, timeout=90, what="a final caption")
    # The grey line grew as the deltas came, each shown text the start of the next (words never taken
    # back). Under load the server skips partials, so how many were seen is not asserted.
    for shorter, longer in pairwise(partials):
        assert longer.startswith(shorter), partials
    print("partial lines seen:", partials)
    page.screenshot(ARTIFACTS / "live-captions.png")
    first = finals.strip().splitlines()[0]
    times = re.match(r"(\d\d):(\d\d\.\d) → (\d\d):(\d\d\.\d)\s*", first)
    assert times, first  # each line starts with its time range
    assert float(times[2]) < 2.0 and 6.5 < float(times[4]) < 10.0, first  # the clip: from 0.5 s, 7 s long
    caption = first[times.end() :]
    assert "leisure" in caption.lower() and "prudently" in caption.lower(), finals
    assert wer(CLIP.with_suffix(".txt").read_text(), caption) <= 0.25, caption
    assert page.evaluate("document.getElementById('status-text').textContent") == "Listening"
    job_line = str(page.evaluate("document.getElementById('job').textContent"))
    assert job_line.startswith("Recorded as job ")

    page.click("#stop")
    wait_for(
        lambda: page.evaluate("document.getElementById('status-text').textContent") == "Not listening",
        timeout=30,
        what="the session to end",
    )
    job_id = job_line.removeprefix("Recorded as job ").strip()
    deadline = time.monotonic() + 120
    while (job := stack.client.get(f"/jobs/{job_id}")).status_code == 404 or job.json()["status"] not in (
        "completed",
        "failed",
        "partial_complete",
    ):
        assert time.monotonic() < deadline, job.text
        time.sleep(0.5)
    assert job.json()["status"] == "completed", job.json()
    assert "Dashwood" in stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]


def test_the_live_page_shows_a_refused_key(stack: RunningStack, page: Page) -> None:
    page.call("Page.navigate", url=f"{stack.base_url}/live?key=sfk_wrong_key")
    wait_for(lambda: page.evaluate("document.readyState") == "complete", timeout=20, what="the page")
    page.click("#start")
    error = wait_for(lambda: page.evaluate("document.getElementById('error').innerText"), timeout=20, what="the error")
    assert "The API refused the key (401)" in error
    assert page.evaluate("document.getElementById('start').disabled") is False
