"""`GET /jobs/{id}/results?format=srt|vtt` with `max_line_chars`, `max_lines` and `max_cue_seconds`, through
the API and a real database, with a transcribe worker defined here that gives a long segment."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from shared.steps.runner import StepContext
from tests.support.pipeline import Stack, build_stack, with_behaviours

TEXT = (
    "Had he married a more amiable woman, he might have been made still more respectable by her. "
    "He might even have been made amiable himself; for he was very young when he married."
)


def long_transcript(_step: StepContext) -> dict[str, Any]:
    words, at = [], 0.0
    for token in TEXT.split():
        words.append({"start": at, "end": at + 0.5, "word": " " + token, "probability": 0.9})
        at += 0.6  # slow speech: the plain cutting leaves cues on screen over 7 s
    segment = {"start": 0.0, "end": at, "text": " " + TEXT, "words": words}
    return {"language": "eng", "text": TEXT, "segments": [segment], "duration": at}


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    yield built
    built.client.close()
    built.runtime.close()


@pytest.fixture
def job_id(stack: Stack) -> str:
    with_behaviours(stack.workers[1], [long_transcript])
    job_id = stack.submit("transcribe_only", source_language="eng")
    stack.start(job_id)
    assert (stack.drive(job_id) or {})["status"] == "completed"
    return str(job_id)


def _srt_cues(body: str) -> list[tuple[float, float, list[str]]]:
    cues = []
    for block in body.strip().split("\n\n"):
        _number, timing, *lines = block.split("\n")
        start, end = (_seconds(stamp) for stamp in timing.split(" --> "))
        cues.append((start, end, lines))
    return cues


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = re.split(r":", stamp.replace(",", "."))
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_subtitles_are_cut_to_the_rules_asked_for(stack: Stack, job_id: str) -> None:
    params = {"format": "srt", "max_line_chars": 32, "max_lines": 1, "max_cue_seconds": 3}
    response = stack.client.get(f"/jobs/{job_id}/results", params=params)

    assert response.status_code == 200, response.text
    cues = _srt_cues(response.text)
    assert [token for _s, _e, lines in cues for line in lines for token in line.split()] == TEXT.split()
    for start, end, lines in cues:
        assert len(lines) == 1 and len(lines[0]) <= 32
        assert end - start <= 3.0 + 0.001

    plain = _srt_cues(stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt"}).text)
    assert len(plain) < len(cues)
    assert any(end - start > 7 for start, end, _lines in plain)  # why the rules are wanted


def test_one_rule_given_takes_broadcast_defaults_for_the_others(stack: Stack, job_id: str) -> None:
    response = stack.client.get(f"/jobs/{job_id}/results", params={"format": "vtt", "max_cue_seconds": 4})

    assert response.status_code == 200, response.text
    blocks = response.text.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    for block in blocks:
        timing, *lines = block.split("\n")
        start, end = (_seconds(stamp.replace(".", ",")) for stamp in timing.split(" --> "))
        assert end - start <= 4.001
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines)


@pytest.mark.parametrize(
    "params",
    [
        {"format": "srt", "max_line_chars": 3},
        {"format": "srt", "max_line_chars": "wide"},
        {"format": "vtt", "max_lines": 0},
        {"format": "srt", "max_cue_seconds": 0.2},
        {"format": "srt", "max_cue_seconds": "nan"},
        {"format": "txt", "max_lines": 2},
        {"max_line_chars": 42},
    ],
)
def test_bad_rules_are_a_422_in_the_error_shape(stack: Stack, job_id: str, params: dict[str, Any]) -> None:
    response = stack.client.get(f"/jobs/{job_id}/results", params=params)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
