"""shared.engines.audio_redaction: which stretches of a recording a masked transcript covers, and the WAV with
them beeped or silenced — same length, rate and channels, nothing else changed."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from shared.domain.results import Segment
from shared.engines.audio import NotAnAudioFile
from shared.engines.audio_redaction import BEEP_HZ, PAD_SECONDS, Stretch, masked_stretches, redact_file
from tests.unit.engines.test_audio import encode_tone


def _segment(*words: tuple[str, float, float]) -> Segment:
    return Segment.model_validate(
        {
            "start": words[0][1],
            "end": words[-1][2],
            "text": " ".join(word for word, _s, _e in words),
            "words": [{"word": " " + word, "start": start, "end": end} for word, start, end in words],
        }
    )


def test_a_masked_word_is_covered_with_padding_but_at_most_half_into_its_neighbours() -> None:
    segment = _segment(
        ("call", 0.0, 0.4), ("me", 0.45, 0.6), ("on", 0.7, 0.8), ("[PHONE].", 1.0, 3.0), ("Thanks", 3.1, 3.5)
    )

    (stretch,) = masked_stretches([segment])

    assert stretch.kind == "[PHONE]"
    assert stretch.start == pytest.approx(0.75)  # halfway into "on", not the full pad
    assert stretch.end == pytest.approx(3.25)  # halfway into "Thanks"


def test_padding_reaches_into_silence_and_stops_at_zero() -> None:
    segment = _segment(("[PERSON]", 0.1, 0.5), ("said", 2.0, 2.4), ("[EMAIL]", 3.0, 4.0))

    first, second = masked_stretches([segment])

    assert (first.start, first.end) == (0.0, pytest.approx(0.5 + PAD_SECONDS))
    assert (second.start, second.end) == (pytest.approx(3.0 - PAD_SECONDS), pytest.approx(4.0 + PAD_SECONDS))


def test_overlapping_stretches_merge_and_unmasked_text_gives_none() -> None:
    masked = _segment(("[PERSON]", 1.0, 1.5), ("[PHONE]", 1.6, 3.0))
    plain = _segment(("nothing", 5.0, 5.5), ("here", 5.6, 6.0))

    (stretch,) = masked_stretches([masked, plain])

    assert (stretch.start, stretch.end) == (pytest.approx(0.75), pytest.approx(3.25))
    assert "[PERSON]" in stretch.kind and "[PHONE]" in stretch.kind


def test_a_segment_without_word_timings_is_covered_whole() -> None:
    segment = Segment(start=2.0, end=5.0, text="my number is [PHONE]")

    assert masked_stretches([segment]) == [Stretch(2.0 - PAD_SECONDS, 5.0 + PAD_SECONDS, "[PHONE]")]


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """`samples`: (frames, channels) int16."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(samples.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return frames.reshape(-1, wav.getnchannels()), wav.getframerate()


def _noise(frames: int, channels: int) -> np.ndarray:
    return np.random.default_rng(7).integers(-8000, 8000, size=(frames, channels)).astype(np.int16)


@pytest.mark.parametrize("method", ["beep", "silence"])
def test_the_stretches_are_replaced_and_nothing_else_changes(tmp_path: Path, method: str) -> None:
    rate, original = 44100, _noise(44100 * 3, 2)
    path = tmp_path / "call.wav"
    _write_wav(path, original, rate)

    redacted = redact_file(path, [Stretch(1.0, 1.5, "[PHONE]")], method=method)  # type: ignore[arg-type]

    samples, got_rate = _read_wav(redacted.data)
    assert (got_rate, redacted.channels, samples.shape) == (rate, 2, original.shape)
    low, high = rate, int(rate * 1.5)
    assert np.array_equal(samples[:low], original[:low])
    assert np.array_equal(samples[high:], original[high:])
    covered = samples[low:high].astype(np.float64)
    assert np.array_equal(covered[:, 0], covered[:, 1])  # every channel alike
    if method == "silence":
        assert not covered.any()
    else:
        spectrum = np.abs(np.fft.rfft(covered[:, 0]))
        assert np.fft.rfftfreq(len(covered), 1 / rate)[spectrum.argmax()] == pytest.approx(BEEP_HZ, abs=5)
        assert 0.2 * 32768 < np.abs(covered).max() < 0.3 * 32768


def test_a_compressed_upload_comes_back_as_a_wav_of_its_rate_channels_and_length(tmp_path: Path) -> None:
    rate, seconds = 22050, 2.0
    path = encode_tone(tmp_path / "clip.mp3", codec="mp3", rate=rate, channels=2, seconds=seconds)

    redacted = redact_file(path, [Stretch(0.5, 1.0, "[EMAIL]")], method="silence")

    samples, got_rate = _read_wav(redacted.data)
    assert got_rate == rate and redacted.channels == 2
    assert abs(samples.shape[0] - rate * seconds) < 0.05 * rate
    assert not samples[int(0.5 * rate) : int(1.0 * rate)].any()
    assert np.abs(samples[int(1.2 * rate) : int(1.8 * rate)]).max() > 0.2 * 32768


def test_a_file_that_is_not_audio_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"this is not audio at all" * 20)

    with pytest.raises(NotAnAudioFile):
        redact_file(path, [])
