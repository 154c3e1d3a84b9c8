"""shared.engines.speech.audio_chunks: where a long recording is cut, and how the chunks' transcripts join up.

`stitch` is exercised on hand-made chunk transcripts (the shape `Transcriber.transcribe` returns);
`plan_chunks` on speech built from the LibriVox fixtures with known pauses, through Silero VAD.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.engines.audio import SAMPLE_RATE, decode
from shared.engines.speech.audio_chunks import choose_cut, plan_chunks, stitch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "en"


def word(text: str, start: float, end: float) -> dict[str, Any]:
    return {"word": text, "start": start, "end": end, "probability": 0.9}


def chunk(*words: dict[str, Any], duration: float, language: str = "eng", probability: float = 0.99) -> dict[str, Any]:
    """One chunk's transcript with one segment holding `words` (times relative to the chunk)."""
    segments = []
    if words:
        segments.append(
            {
                "start": words[0]["start"],
                "end": words[-1]["end"],
                "text": " ".join(item["word"] for item in words),
                "words": list(words),
            }
        )
    return {
        "language": language,
        "language_probability": probability,
        "duration": duration,
        "text": " ".join(segment["text"] for segment in segments),
        "segments": segments,
        "model": "bundled",
        "device": "cpu",
        "compute_type": "int8",
        "batch_size": 8,
        "processing_seconds": 1.0,
    }


def all_words(transcript: dict[str, Any]) -> list[tuple[str, float, float]]:
    words = [item for segment in transcript["segments"] for item in segment["words"]]
    return [(item["word"], item["start"], item["end"]) for item in words]


# --- stitch -------------------------------------------------------------------------------------------


def test_a_word_cut_by_the_boundary_appears_once() -> None:
    # Chunk A is [0, 11), chunk B [9, 20): the seam is at 10. "boundary" (9.8–10.4) straddles it, so
    # both chunks heard it whole, with timestamps a few hundredths apart.
    first = chunk(word("a", 8.0, 8.4), word("word", 8.5, 9.0), word("across", 9.1, 9.6), word("boundary", 9.8, 10.4),
                  word("and", 10.5, 10.8), duration=11.0)  # fmt: skip
    second = chunk(word("across", 0.12, 0.6), word("boundary", 0.82, 1.38), word("and", 1.5, 1.8),
                   word("on", 2.0, 2.3), duration=11.0)  # fmt: skip

    joined = stitch([first, second], [0.0, 9.0])

    texts = [text for text, _, _ in all_words(joined)]
    assert texts == ["a", "word", "across", "boundary", "and", "on"]
    assert joined["text"] == "a word across boundary and on"
    starts = [start for _, start, _ in all_words(joined)]
    assert starts == sorted(starts)
    assert joined["duration"] == 20.0


def test_a_word_whose_two_copies_fall_either_side_of_the_seam_appears_once() -> None:
    # Seen on a CPU whose numbers differ slightly: the seam is 10.0, A timed "boundary" 9.75–10.24
    # (middle 9.995, A's side) and B 10.0–10.03 later (middle 10.015, B's side): each owned its copy.
    first = chunk(word("across", 9.3, 9.7), word("boundary", 9.75, 10.24), word("and", 10.3, 10.6),
                  duration=11.0)  # fmt: skip
    second = chunk(word("across", 0.31, 0.69), word("Boundary,", 0.77, 1.26), word("and", 1.31, 1.6),
                   word("on", 1.8, 2.1), duration=11.0)  # fmt: skip

    joined = stitch([first, second], [0.0, 9.0])

    # B's copy stays: it was heard further from its chunk's edge (1.015 s in, against 1.005 s before A's end).
    assert [text for text, _, _ in all_words(joined)] == ["across", "Boundary,", "and", "on"]
    assert joined["text"] == "across Boundary, and on"
    # Two different words at the same moment are not one word said twice: both stay.
    other = chunk(word("bound", 0.77, 1.26), word("and", 1.31, 1.6), duration=11.0)
    assert [text for text, _, _ in all_words(stitch([first, other], [0.0, 9.0]))] == [
        "across", "boundary", "bound", "and",
    ]  # fmt: skip


def test_a_word_only_one_side_heard_is_kept_even_past_the_seam() -> None:
    # A heard "late" (10.1–10.5, past the seam at 10); B, starting at 9, did not: it must not be lost.
    first = chunk(word("early", 9.0, 9.5), word("late", 10.1, 10.5), duration=11.0)
    second = chunk(word("next", 2.0, 2.4), duration=11.0)

    joined = stitch([first, second], [0.0, 9.0])

    assert [text for text, _, _ in all_words(joined)] == ["early", "late", "next"]


def test_offsets_move_every_time_and_chunks_join_in_order() -> None:
    first = chunk(word("one", 0.5, 0.9), duration=30.0)
    second = chunk(word("two", 0.5, 0.9), duration=30.0)
    third = chunk(word("three", 0.5, 0.9), duration=12.5)

    # Given out of order, as chunk steps may finish.
    joined = stitch([third, first, second], [60.0, 0.0, 30.0])

    assert all_words(joined) == [("one", 0.5, 0.9), ("two", 30.5, 30.9), ("three", 60.5, 60.9)]
    assert [segment["start"] for segment in joined["segments"]] == [0.5, 30.5, 60.5]
    assert joined["duration"] == 72.5
    assert joined["chunks"] == 3
    assert joined["processing_seconds"] == 3.0


def test_one_language_for_the_file() -> None:
    chunks = [
        chunk(word("hello", 1.0, 1.5), duration=300.0, language="eng", probability=0.9),
        chunk(word("hola", 1.0, 1.5), duration=20.0, language="spa", probability=0.6),
        chunk(word("again", 1.0, 1.5), duration=300.0, language="eng", probability=0.8),
    ]

    joined = stitch(chunks, [0.0, 300.0, 320.0])

    assert joined["language"] == "eng"
    assert joined["language_probability"] == pytest.approx(0.85)


def test_a_segment_split_at_the_seam_gets_its_text_from_its_words() -> None:
    first = chunk(word("kept", 9.0, 9.4), word("shared", 10.2, 10.6), duration=11.0)
    second = chunk(word("shared", 1.21, 1.58), word("after", 1.7, 2.0), duration=11.0)

    joined = stitch([first, second], [0.0, 9.0])

    assert [segment["text"] for segment in joined["segments"]] == ["kept", "shared after"]
    assert joined["segments"][0]["end"] == 9.4


def test_stitch_needs_an_offset_per_chunk() -> None:
    with pytest.raises(ValueError, match="one offset per chunk"):
        stitch([chunk(duration=1.0)], [0.0, 1.0])


# --- cuts -----------------------------------------------------------------------------------------------


def test_the_cut_is_the_middle_of_the_pause_nearest_the_ideal_point() -> None:
    pauses = [(40.0, 41.0), (58.0, 58.6), (75.0, 77.0)]
    assert choose_cut(pauses, ideal=60.0, low=30.0, high=90.0) == pytest.approx(58.3)
    assert choose_cut(pauses, ideal=74.0, low=30.0, high=90.0) == pytest.approx(76.0)
    # No pause in reach: a hard cut at the ideal point (the overlap keeps its word whole).
    assert choose_cut(pauses, ideal=100.0, low=95.0, high=105.0) == 100.0


@pytest.fixture(scope="module")
def readings() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """About 80 s of the LibriVox clips one after another, and where the 1 s pauses between them are."""
    pieces: list[np.ndarray] = []
    pauses: list[tuple[float, float]] = []
    position = 0
    for _ in range(3):
        for path in sorted(FIXTURES.glob("librivox-*.wav")):
            samples = decode(path)
            pieces.append(samples)
            position += len(samples)
            pauses.append((position / SAMPLE_RATE, position / SAMPLE_RATE + 1.0))
            pieces.append(np.zeros(SAMPLE_RATE, dtype=np.float32))
            position += SAMPLE_RATE
    return np.concatenate(pieces), pauses


def test_a_short_recording_is_one_chunk(readings: tuple[np.ndarray, list[tuple[float, float]]]) -> None:
    audio, _ = readings
    duration = len(audio) / SAMPLE_RATE
    assert plan_chunks(audio, duration / 2) == [(0.0, duration)]


def test_a_long_recording_is_cut_in_pauses_near_the_target(
    readings: tuple[np.ndarray, list[tuple[float, float]]], tmp_path: Path
) -> None:
    audio, pauses = readings
    duration = len(audio) / SAMPLE_RATE

    chunks = plan_chunks(audio, 20.0, overlap_seconds=2.0)

    assert len(chunks) == pytest.approx(duration / 20.0, abs=1)
    assert chunks[0][0] == 0.0
    assert chunks[-1][1] == pytest.approx(duration)
    for (_, end), (start, _) in itertools.pairwise(chunks):
        cut = (start + end) / 2
        assert end - start == pytest.approx(2.0)
        # Every cut is inside one of the pauses between readings.
        assert any(low <= cut <= high for low, high in pauses), cut
    lengths = [end - start for start, end in chunks]
    assert all(10.0 <= length <= 32.0 for length in lengths), lengths

    import wave

    path = tmp_path / "readings.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    from_file = plan_chunks(path, 20.0, overlap_seconds=2.0)
    # From the file, only the stretches around each cut are decoded; the cuts land in the same pauses.
    assert len(from_file) == len(chunks)
    for (_, file_end), (_, array_end) in zip(from_file, chunks, strict=True):
        assert file_end == pytest.approx(array_end, abs=0.1)
