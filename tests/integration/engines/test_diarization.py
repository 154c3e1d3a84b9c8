"""senko diarization (shared/engines/speech/diarization.py) on a 3-speaker conversation built from the fixtures.

The conversation is laid out here, in memory, from three voices of tests/fixtures/audio: the
LibriVox reader, the Kokoro English voice and the Kokoro French voice, seven turns with half-second
pauses, so every turn's time and speaker is known. (The CMU meeting clip is not used: it is one
microphone of a meeting, and more than one voice can be heard in it.)
One diarizer (2 threads, without senko's warm-up, which only compiles code for recordings over 20
minutes) serves the module.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.domain.speaker_match import cosine
from shared.domain.speaker_turns import attribute_speakers
from shared.engines.audio import SAMPLE_RATE, AudioArray, decode
from shared.engines.speech.diarization import BadSpeakerCount, Diarization, SenkoDiarizer, Turn
from shared.engines.speech.fbank import senko_extractor_runs_here, window_features

pytestmark = pytest.mark.slow

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
PAUSE = 0.5
COLLAR = 0.3


def _clip(name: str) -> AudioArray:
    return decode(AUDIO / name)


@pytest.fixture(scope="module")
def conversation() -> tuple[AudioArray, list[tuple[float, float, str]]]:
    """The audio and its reference turns (start, end, speaker)."""
    turns = [
        ("reader", _clip("en/librivox-0870.wav")),
        ("french", _clip("fr/kokoro-pangrama.wav")),
        ("english", _clip("en/kokoro-quick_brown_fox.wav")),
        ("reader", _clip("en/librivox-0920.wav")),
        ("french", _clip("fr/kokoro-comptage.wav")),
        ("english", _clip("en/kokoro-counting.wav")),
        ("reader", _clip("en/librivox-0890.wav")),
    ]
    pause = np.zeros(round(PAUSE * SAMPLE_RATE), dtype=np.float32)
    pieces: list[AudioArray] = []
    reference: list[tuple[float, float, str]] = []
    position = 0.0
    for speaker, samples in turns:
        seconds = len(samples) / SAMPLE_RATE
        reference.append((position, position + seconds, speaker))
        pieces += [samples, pause]
        position += seconds + PAUSE
    return np.concatenate(pieces), reference


@pytest.fixture(scope="module")
def diarizer() -> SenkoDiarizer:
    engine = SenkoDiarizer(threads=2, warmup=False)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def found(diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]]) -> Diarization:
    return diarizer.diarize(conversation[0])


def _speaker_of(turns: list[Turn], start: float, end: float) -> dict[str, float]:
    """Seconds of [start, end] each found speaker holds."""
    held: dict[str, float] = {}
    for turn in turns:
        overlap = min(end, turn["end"]) - max(start, turn["start"])
        if overlap > 0:
            held[turn["speaker"]] = held.get(turn["speaker"], 0.0) + overlap
    return held


def _agreement(turns: list[Turn], reference: list[tuple[float, float, str]]) -> tuple[dict[str, str], float]:
    """Each true speaker's found label (the one holding most of its turns, away from the edges) and
    the share of that reference time the mapping gets right."""
    held: dict[str, dict[str, float]] = {}
    for start, end, speaker in reference:
        for label, seconds in _speaker_of(turns, start + COLLAR, end - COLLAR).items():
            held.setdefault(speaker, {}).setdefault(label, 0.0)
            held[speaker][label] += seconds
    mapping = {speaker: max(labels, key=lambda label: labels[label]) for speaker, labels in held.items()}
    right = sum(held[speaker][label] for speaker, label in mapping.items())
    total = sum(end - start - 2 * COLLAR for start, end, _ in reference)
    return mapping, right / total


def test_three_speakers_are_found_where_they_speak(
    found: Diarization, conversation: tuple[AudioArray, list[tuple[float, float, str]]]
) -> None:
    _, reference = conversation
    mapping, right = _agreement(found.turns, reference)

    assert len(found.speakers) == 3, found.turns
    assert len(set(mapping.values())) == 3, mapping
    # The clips' leading and trailing silence counts as their speaker's in the reference.
    assert right >= 0.8, (right, found.turns)
    assert found.duration == pytest.approx(len(conversation[0]) / SAMPLE_RATE)
    assert 0 < found.speech_seconds < found.duration
    assert set(found.centroids) == set(found.speakers)
    assert all(len(centroid) == 192 for centroid in found.centroids.values())


def test_with_kaldi_native_fbank_features_the_same_speakers_are_found(
    diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]]
) -> None:
    """The features of CPUs without AVX-512 (where senko's own extractor dies with SIGILL) are forced
    here, so that they are checked on every CPU."""
    audio, reference = conversation
    portable = SenkoDiarizer(threads=2, warmup=False, senko_features=False)
    portable._engine = diarizer.engine  # the same loaded models; only the features differ

    found = portable.diarize(audio)
    expected = portable.diarize(audio, speakers_expected=3)

    for result in (found, expected):
        mapping, right = _agreement(result.turns, reference)
        assert len(set(mapping.values())) == 3 and right >= 0.8, (right, result.turns)
    assert len(found.speakers) == 3


@pytest.mark.skipif(
    not senko_extractor_runs_here(),
    reason="this CPU lacks AVX-512, where senko's extractor dies with SIGILL: runs on AVX-512 CPUs (Intel Xeon)",
)
def test_kaldi_native_fbank_features_are_senkos(
    diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]]
) -> None:
    """Window by window, frame by frame. senko's extractor lays the windows out in the order its
    threads finish them (each claims its place with an atomic add), so each side is read at its own
    offsets. Tolerance, from a measurement: senko 0.2.2's extractor built from its source release
    without AVX-512 (with the wheel's -O3 -ffast-math, and with -O2) against this fallback on every
    fixture, 1.5 s windows every 0.75 s and edge cases, differed by at most 8.3e-4 in any log-mel
    value (the two builds of senko differed from each other by 8.7e-4; quiet bins near the log floor
    differ most), with equal frame counts and correlation over 0.999999999. So: equal frame counts,
    every value within 0.01, correlation ≥ 0.9999 per window."""
    audio = conversation[0]
    windows = [(1.0, 2.5), (2.0, 3.5), (9.3, 10.1), (12.0, 13.5)]
    engine = diarizer.engine
    ours, our_frames, our_offsets, dim = window_features(audio, windows)
    theirs, their_frames, their_offsets, their_dim = engine._extract_fbank_features(audio, windows)
    theirs = np.asarray(theirs, dtype=np.float32)

    assert dim == their_dim == 80
    assert list(our_frames) == [int(count) for count in their_frames]
    # senko's windows tile its buffer in some order, with no gap and no overlap.
    ends = {
        int(offset): int(offset) + int(frames) * dim for offset, frames in zip(their_offsets, their_frames, strict=True)
    }
    at = 0
    while at in ends:
        at = ends.pop(at)
    assert not ends and at == theirs.size
    for index, frames in enumerate(our_frames):
        size = int(frames) * dim
        mine = np.asarray(ours[int(our_offsets[index]) : int(our_offsets[index]) + size]).reshape(-1, dim)
        senkos = theirs[int(their_offsets[index]) : int(their_offsets[index]) + size].reshape(-1, dim)
        assert float(np.abs(mine - senkos).max()) <= 0.01, windows[index]
        assert np.corrcoef(mine.ravel(), senkos.ravel())[0, 1] >= 0.9999, windows[index]


def test_turns_are_in_time_order_and_do_not_overlap(found: Diarization) -> None:
    starts = [turn["start"] for turn in found.turns]
    assert starts == sorted(starts)
    assert all(a["end"] <= b["start"] for a, b in zip(found.turns, found.turns[1:], strict=False))


def test_words_joined_with_the_turns_get_speakers_in_order_of_appearance(
    found: Diarization, conversation: tuple[AudioArray, list[tuple[float, float, str]]]
) -> None:
    _, reference = conversation
    # One word in the middle of each reference turn, all in one segment: the join must split it.
    words: list[dict[str, Any]] = [
        {"start": (start + end) / 2 - 0.2, "end": (start + end) / 2 + 0.2, "word": speaker, "probability": 1.0}
        for start, end, speaker in reference
    ]
    segment = {
        "start": 0.0,
        "end": reference[-1][1],
        "text": " ".join(speaker for *_, speaker in reference),
        "words": words,
    }

    joined = attribute_speakers([segment], found.turns)

    assert [(s["speaker"], s["text"]) for s in joined] == [
        ("A", "reader"),
        ("B", "french"),
        ("C", "english"),
        ("A", "reader"),
        ("B", "french"),
        ("C", "english"),
        ("A", "reader"),
    ]


@pytest.mark.parametrize("expected", [2, 3, 4])
def test_the_expected_speaker_count_is_honoured(
    diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]], expected: int
) -> None:
    result = diarizer.diarize(conversation[0], speakers_expected=expected)

    assert len(result.speakers) == expected, result.turns
    assert result.speakers_expected == expected
    if expected == 3:
        mapping, right = _agreement(result.turns, conversation[1])
        assert len(set(mapping.values())) == 3
        assert right >= 0.8


def test_one_speaker_expected_gives_one_speaker(
    diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]]
) -> None:
    result = diarizer.diarize(conversation[0], speakers_expected=1)

    assert result.speakers == ["SPEAKER_1"]


def test_a_file_is_decoded_and_mixed_down(
    diarizer: SenkoDiarizer, conversation: tuple[AudioArray, list[tuple[float, float, str]]], tmp_path: Path
) -> None:
    audio, reference = conversation
    path = tmp_path / "call.wav"
    # The same conversation in both channels of a 16-bit stereo WAV: the mix-down is the conversation.
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.repeat(pcm, 2).tobytes())

    result = diarizer.diarize(path, speakers_expected=3)

    mapping, right = _agreement(result.turns, reference)
    assert len(set(mapping.values())) == 3
    assert right >= 0.8


def test_silence_has_no_turns(diarizer: SenkoDiarizer) -> None:
    result = diarizer.diarize(np.zeros(5 * SAMPLE_RATE, dtype=np.float32))

    assert result.turns == []
    assert result.speakers == []
    assert result.speech_seconds == 0.0


def test_a_speaker_count_out_of_range_is_refused_before_any_work(diarizer: SenkoDiarizer) -> None:
    with pytest.raises(BadSpeakerCount):
        diarizer.diarize(np.zeros(SAMPLE_RATE, dtype=np.float32), speakers_expected=21)


@pytest.mark.parametrize("senko_features", [True, False], ids=["senko-features", "kaldi-native-fbank"])
def test_voiceprints_tell_a_voice_from_another_and_count_a_clips_voices(
    diarizer: SenkoDiarizer, senko_features: bool
) -> None:
    """What enrollment and matching rest on (shared/steps/enroll.py, shared/domain/speaker_match.py), with
    either way of computing the features: two recordings of one reader are far more alike than the
    reader and a Kokoro voice, and a clip of the two of them holds two voices."""
    if senko_features and not senko_extractor_runs_here():
        pytest.skip("this CPU lacks AVX-512, where senko's extractor dies with SIGILL")
    engine = SenkoDiarizer(threads=2, warmup=False, senko_features=senko_features)
    engine._engine = diarizer.engine  # the same loaded models; only the features differ

    reader = engine.voiceprint(_clip("en/librivox-0920.wav"))
    again = engine.voiceprint(_clip("en/librivox-0880.wav"))
    other = engine.voiceprint(_clip("en/kokoro-counting.wav"))
    both = engine.voiceprint(np.concatenate([_clip("en/librivox-0870.wav"), _clip("en/kokoro-counting.wav")]))
    quiet = engine.voiceprint(np.zeros(3 * SAMPLE_RATE, dtype=np.float32))

    assert len(reader.embedding) == 192 and reader.voices == [1.0]
    assert 4.0 < reader.speech_seconds < 6.5
    assert cosine(reader.embedding, again.embedding) >= 0.85
    assert cosine(reader.embedding, other.embedding) <= 0.55
    assert len(both.voices) == 2 and both.voices[1] >= 0.2
    assert (quiet.embedding, quiet.speech_seconds, quiet.voices) == ([], 0.0, [])
