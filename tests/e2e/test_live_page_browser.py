"""The live-captions page (GET /live) in a real browser against the running stack with its live component:
headless Chromium (Debian's `chromium`) with a fake microphone that plays a fixture clip followed by
silence, driven over the DevTools protocol as a person uses the page (the key in the address, a click on
Start). The page gets a client secret, opens /v1/realtime in the browsers' subprotocol, sends the
microphone as 24 kHz PCM16 from an AudioWorklet, and must show a final caption with the clip's words.
A screenshot is saved under .test-artifacts/."""

from __future__ import annotations

import re
import wave
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import RunningStack, free_port
from tests.e2e.test_listen_cli import wait_live
from tests.support.browser import Page, open_page, wait_for
from tests.support.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.model]

ARTIFACTS = REPO / ".test-artifacts"
CLIP = REPO / "tests" / "fixtures" / "audio" / "en" / "librivox-0870.wav"
MICROPHONE_FLAGS = ("--window-size=1000,800", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


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
    microphone = microphone_wav(tmp_path / "microphone.wav")
    with open_page([*MICROPHONE_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"]) as tab:
        yield tab


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
    job = stack.wait([job_id], timeout=120, poll=0.5)[job_id]
    assert job["status"] == "completed", job
    assert "Dashwood" in stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]


def test_the_live_page_shows_a_refused_key(stack: RunningStack, page: Page) -> None:
    page.call("Page.navigate", url=f"{stack.base_url}/live?key=sfk_wrong_key")
    wait_for(lambda: page.evaluate("document.readyState") == "complete", timeout=20, what="the page")
    page.click("#start")
    error = wait_for(lambda: page.evaluate("document.getElementById('error').innerText"), timeout=20, what="the error")
    assert "The API refused the key (401)" in error
    assert page.evaluate("document.getElementById('start').disabled") is False
