"""Code-switching through the real local stack: a recording whose turns alternate English, French and
Mandarin (the fixtures' voices), sent with `code_switching: true`, comes back with every turn in its own
language and script, each segment saying its language, the languages listed with their talk time, and
subtitles in each turn's words; full_pipeline translates only the segments not already in English."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.engines.audio import SAMPLE_RATE, decode
from tests.e2e.conftest import AUDIO, RunningStack
from tests.e2e.test_speakers_and_chunks import write_wav

TURNS = [
    ("eng", "en/librivox-0870"),
    ("fra", "fr/kokoro-pangrama"),
    ("cmn", "zh/kokoro-pangrama"),
    ("eng", "en/librivox-0890"),
    ("fra", "fr/kokoro-comptage"),
]
GAP_SECONDS = 0.6
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {"WHISPER_WORKERS": "1", "WHISPER_CPU_THREADS": "2"}
    with start_stack(components=("api", "router", "lid", "whisper", "azure-ai"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, float, float]]]:
    """The recording, and each turn's language and (start, end) extended to the middle of its pauses."""
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    spans = []
    at = 0.0
    for language, clip in TURNS:
        samples = decode(AUDIO / f"{clip}.wav")
        spans.append((language, at - GAP_SECONDS / 2, at + len(samples) / SAMPLE_RATE + GAP_SECONDS / 2))
        pieces += [samples, gap]
        at += (len(samples) + len(gap)) / SAMPLE_RATE
    path = tmp_path_factory.mktemp("mixed") / "mixed.wav"
    write_wav(path, [np.concatenate(pieces)])
    return path, spans


def turn_of(spans: list[tuple[str, float, float]], start: float, end: float) -> int:
    middle = (start + end) / 2
    return next(index for index, (_, low, high) in enumerate(spans) if low <= middle < high)


def test_each_turn_is_transcribed_in_its_own_language(
    stack: RunningStack, mixed: tuple[Path, list[tuple[str, float, float]]]
) -> None:
    path, spans = mixed
    job_id = stack.submit(path, "transcribe_only", code_switching=True)
    job = stack.wait([job_id], timeout=300)[job_id]
    assert job["status"] == "completed", job
    assert job["options"] == {"code_switching": True}
    results = stack.results(job_id).json()
    transcript: dict[str, Any] = results["transcript"]

    texts: list[list[str]] = [[] for _ in spans]
    for segment in transcript["segments"]:
        index = turn_of(spans, segment["start"], segment["end"])
        assert segment["language"] == spans[index][0], (segment, spans[index])
        texts[index].append(segment["text"])
    assert all(texts), texts  # no turn lost
    said = [" ".join(parts) for parts in texts]
    assert "Dashwood" in said[0]
    assert "whisky" in said[1].lower() and not HAN.search(said[1])
    assert len(HAN.findall(said[2])) >= 8, said[2]  # Mandarin in Han characters, not translated
    assert "cold-hearted" in said[3] or "cold hearted" in said[3]
    assert not HAN.search(said[0] + said[3])

    languages = {entry["language"]: entry["talk_seconds"] for entry in transcript["languages"]}
    assert set(languages) == {"eng", "fra", "cmn"}
    assert results["language"] == "eng" == max(languages, key=lambda code: languages[code])
    # Talk time is each language's segments: within a second of the turns' speech.
    assert languages["cmn"] == pytest.approx(3.9, abs=1.0)
    assert languages["eng"] > languages["fra"] > languages["cmn"] * 0.8

    subtitles = stack.results(job_id, "srt").text
    assert "whisky" in subtitles.lower() and HAN.search(subtitles) and "Dashwood" in subtitles


def test_full_pipeline_translates_only_what_is_not_english(
    stack: RunningStack, mixed: tuple[Path, list[tuple[str, float, float]]]
) -> None:
    path, _ = mixed
    job_id = stack.submit(path, "full_pipeline", code_switching=True, languages=["en", "fr", "zh"])
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    results = stack.results(job_id).json()
    transcript, translation = results["transcript"], results["translation"]
    assert len(translation["segments"]) == len(transcript["segments"])
    for original, translated in zip(transcript["segments"], translation["segments"], strict=True):
        assert (translated["start"], translated["end"]) == (original["start"], original["end"])
        if original["language"] == "eng":
            assert translated["text"] == original["text"]  # kept, not translated again
        else:
            assert translated["text"] and translated["text"] != original["text"], (original, translated)
            assert not HAN.search(translated["text"]), translated
    # The offline summary quotes the English translation, not the turns in their own languages.
    summary = results["summary"]
    assert summary["summary"] and summary["key_points"]
    for quoted in [summary["summary"], *summary["key_points"]]:
        assert not HAN.search(quoted), summary
    english = " ".join(translation["text"].split())
    assert " ".join(summary["key_points"][0].removesuffix(" …").split()) in english, (summary, english)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"workflow_type": "transcribe_only", "source_language": "en"}, "give no source_language"),
        ({"workflow_type": "lid_only"}, "needs a transcript"),
        ({"workflow_type": "translate_only", "source_language": "en"}, "only apply to audio workflows"),
    ],
)
def test_code_switching_where_it_cannot_apply_is_refused(
    stack: RunningStack, fields: dict[str, Any], message: str
) -> None:
    answer = stack.client.post("/jobs", json={"audio_filename": "a.wav", "code_switching": True, **fields})
    assert answer.status_code == 422, answer.text
    assert message in answer.text


def test_languages_narrow_code_switching_in_transcribe_only(stack: RunningStack) -> None:
    request = {"workflow_type": "transcribe_only", "audio_filename": "a.wav", "languages": ["es", "en"]}
    assert stack.client.post("/jobs", json=request).status_code == 422
    created = stack.client.post("/jobs", json={**request, "code_switching": True})
    assert created.status_code == 201, created.text
    assert stack.job(created.json()["job_id"])["options"] == {"code_switching": True, "languages": ["spa", "eng"]}
