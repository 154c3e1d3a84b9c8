"""Subtitle cue rules through the real local stack: `GET /jobs/{id}/results?format=srt` and the OpenAI
front's `response_format=srt` with `max_line_chars`, `max_lines` and `max_cue_seconds`, on a Whisper
transcript of real read speech — every word kept, every cue within the rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.e2e.conftest import AUDIO, RunningStack

CLIP = AUDIO / "en" / "librivox-0920.wav"
RULES = {"max_line_chars": 20, "max_lines": 1, "max_cue_seconds": 2.5}


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(
        components=("api", "router", "whisper"), env={"WHISPER_WORKERS": "1", "WHISPER_CPU_THREADS": "2"}
    ) as running:
        yield running


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _check(srt: str, transcript_words: list[str]) -> int:
    blocks = srt.strip().split("\n\n")
    shown: list[str] = []
    for block in blocks:
        _number, timing, *lines = block.split("\n")
        start, end = (_seconds(stamp) for stamp in timing.split(" --> "))
        assert end - start <= RULES["max_cue_seconds"] + 0.001, block
        assert len(lines) <= RULES["max_lines"], block
        assert all(len(line) <= RULES["max_line_chars"] or " " not in line for line in lines), block
        shown += [token for line in lines for token in line.split()]
    assert shown == transcript_words
    return len(blocks)


def test_subtitles_cut_to_rules_on_both_fronts(stack: RunningStack) -> None:
    job_id = stack.submit(CLIP, "transcribe_only", source_language="eng")
    assert stack.wait([job_id], timeout=300)[job_id]["status"] == "completed"
    transcript = stack.results(job_id).json()["transcript"]
    words = [token for segment in transcript["segments"] for token in segment["text"].split()]

    ruled = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt", **RULES})
    assert ruled.status_code == 200, ruled.text
    cues = _check(ruled.text, words)
    plain = stack.results(job_id, "srt").text
    assert cues > plain.count("-->")
    refused = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt", "max_lines": 0})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"

    with CLIP.open("rb") as audio:
        answer = httpx.post(
            f"{stack.base_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {stack.env['SPEECHFLOW_API_KEY']}"},
            data={"model": "whisper-1", "language": "en", "response_format": "srt", **RULES},
            files={"file": (CLIP.name, audio, "audio/wav")},
            timeout=300,
        )
    assert answer.status_code == 200, answer.text
    assert re.match(r"1\n00:00:", answer.text)
    _check(answer.text, words)
