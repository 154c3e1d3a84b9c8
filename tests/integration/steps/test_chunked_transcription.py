"""A recording transcribed in chunks with the real bundled model, joined by `stitch`: a word that a
chunk boundary cuts in two comes out once, and the joined transcript reads like the whole one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.core.config import WhisperSettings
from shared.engines.audio import SAMPLE_RATE, decode, decode_window
from shared.engines.speech.audio_chunks import plan_chunks, stitch
from shared.engines.speech.transcriber import Transcriber
from tests.support.wer import normalise, wer

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "en"
CLIP = AUDIO / "librivox-0870.wav"


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    config = WhisperSettings(model="bundled", cpu_threads=2, beam_size=5)
    engine = Transcriber(config, tmp_path_factory.mktemp("models"))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def whole(transcriber: Transcriber) -> dict[str, Any]:
    return transcriber.transcribe(CLIP, language="eng")


def words_of(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    return [word for segment in transcript["segments"] for word in segment["words"]]


@pytest.mark.model
def test_a_word_cut_by_a_chunk_boundary_appears_once(transcriber: Transcriber, whole: dict[str, Any]) -> None:
    # Cut in the middle of a word of at least 4 letters near the middle of the clip, with no pause.
    duration = whole["duration"]
    candidates = [word for word in words_of(whole) if len(normalise(word["word"])) >= 4]
    victim = min(candidates, key=lambda word: abs((word["start"] + word["end"]) / 2 - duration / 2))
    cut = (victim["start"] + victim["end"]) / 2
    chunks = [(0.0, cut + 1.0), (cut - 1.0, duration)]

    parts = [transcriber.transcribe(decode_window(CLIP, start, end - start), language="eng") for start, end in chunks]
    joined = stitch(parts, [start for start, _ in chunks])

    spoken = normalise(victim["word"])
    assert [normalise(word["word"]) for word in words_of(joined)].count(spoken) == [
        normalise(word["word"]) for word in words_of(whole)
    ].count(spoken)
    # Each side heard the cut word whole, thanks to the overlap: both chunks have it.
    assert all(spoken in normalise(part["text"]).split() for part in parts)
    reference = (AUDIO / "librivox-0870.txt").read_text()
    assert wer(reference, joined["text"]) <= wer(reference, whole["text"]) + 0.03
    starts = [word["start"] for word in words_of(joined)]
    assert starts == sorted(starts)
    assert all(0.0 <= start <= duration for start in starts)


@pytest.mark.model
def test_planned_chunks_of_decoded_readings_join_into_the_whole_text(transcriber: Transcriber) -> None:
    clips = sorted(AUDIO.glob("librivox-*.wav"))
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([piece for path in clips for piece in (decode(path), pause)])
    reference = " ".join(path.with_suffix(".txt").read_text() for path in clips)

    chunks = plan_chunks(audio, 8.0)
    parts = [
        transcriber.transcribe(audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)], language="eng")
        for start, end in chunks
    ]
    joined = stitch(parts, [start for start, _ in chunks])

    assert len(chunks) >= 3
    assert joined["language"] == "eng"
    assert joined["duration"] == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.01)
    assert wer(reference, joined["text"]) <= 0.10
