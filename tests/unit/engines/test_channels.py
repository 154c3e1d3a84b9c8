"""Crosstalk on split channels: a word another channel was clearly louder for is that channel's, not
this one's; levels are measured a window at a time."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from shared.engines.speech.channels import FRAME_SECONDS, channel_levels, drop_crosstalk


def levels_for(spans: list[list[tuple[float, float, float]]], seconds: float) -> np.ndarray:
    """dB per frame per channel: -100 everywhere except the (start, end, dB) spans given per channel."""
    frames = int(seconds / FRAME_SECONDS)
    rows = np.full((len(spans), frames), -100.0)
    for channel, channel_spans in enumerate(spans):
        for start, end, level in channel_spans:
            rows[channel, int(start / FRAME_SECONDS) : int(end / FRAME_SECONDS)] = level
    return rows


def word(start: float, end: float, text: str) -> dict[str, object]:
    return {"start": start, "end": end, "word": text, "probability": 0.9}


def test_words_the_other_channel_was_louder_for_are_dropped() -> None:
    # Channel 0 speaks 0–2 s; channel 1 speaks 2–4 s and leaks into channel 0 at -30 dB below.
    levels = levels_for([[(0, 2, -20), (2, 4, -50)], [(0, 2, -50), (2, 4, -20)]], 5)
    transcripts = {
        0: [
            {
                "start": 0.0,
                "end": 3.9,
                "text": "hello there how are",
                "words": [
                    word(0.1, 0.8, "hello"),
                    word(0.9, 1.8, "there"),
                    word(2.1, 2.9, "how"),
                    word(3.0, 3.9, "are"),
                ],
            }
        ],
        1: [{"start": 2.1, "end": 3.9, "text": "how are", "words": [word(2.1, 2.9, "how"), word(3.0, 3.9, "are")]}],
    }
    kept = drop_crosstalk(transcripts, levels)

    assert [w["word"] for w in kept[0][0]["words"]] == ["hello", "there"]
    assert kept[0][0]["text"] == "hello there"
    assert (kept[0][0]["start"], kept[0][0]["end"]) == (0.1, 1.8)
    assert kept[1] == transcripts[1]


def test_both_speaking_at_once_keeps_both() -> None:
    levels = levels_for([[(0, 2, -22)], [(0, 2, -25)]], 3)
    transcripts = {
        0: [{"start": 0.0, "end": 1.0, "text": "yes", "words": [word(0.0, 1.0, "yes")]}],
        1: [{"start": 0.5, "end": 1.5, "text": "no", "words": [word(0.5, 1.5, "no")]}],
    }
    assert drop_crosstalk(transcripts, levels) == transcripts


def test_a_segment_left_without_words_is_dropped() -> None:
    levels = levels_for([[(0, 1, -60)], [(0, 1, -20)]], 2)
    transcripts = {0: [{"start": 0.1, "end": 0.9, "text": "echo", "words": [word(0.1, 0.9, "echo")]}], 1: []}
    assert drop_crosstalk(transcripts, levels) == {0: [], 1: []}


def test_levels_are_measured_per_channel_and_frame(tmp_path: Path) -> None:
    rate = 16000
    seconds = 61.5  # longer than one decoding window
    t = np.arange(int(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t) * (t < 1.0)
    right = 0.05 * np.sin(2 * np.pi * 440 * t) * (t > 60.5)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())

    levels = channel_levels(path, 2)

    assert levels.shape[0] == 2
    assert abs(levels.shape[1] - seconds / FRAME_SECONDS) <= 2
    assert levels[0, 5] > -10 and levels[1, 5] < -80  # left loud in the first second, right silent
    assert levels[1, -5] > -30 and levels[0, -5] < -80  # right speaks in the last second
