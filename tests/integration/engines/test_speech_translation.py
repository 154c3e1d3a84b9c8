"""Speech → English with Whisper's translate task: from a file, or from samples a step already decoded
(then nothing is decoded again)."""

from __future__ import annotations

from pathlib import Path

import pytest

import shared.engines.speech.translation as speech_translation
from shared.core.config import Settings, WhisperSettings
from shared.engines.audio import decode
from shared.engines.speech.translation import translate_speech

FRENCH = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "fr" / "kokoro-comptage.wav"
""""Un deux trois quatre cinq six sept huit neuf dix." (kokoro-comptage.txt)"""


@pytest.mark.model
def test_decoded_samples_translate_without_decoding_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(whisper=WhisperSettings(cpu_threads=2, model_cache_dir=tmp_path))
    samples = decode(FRENCH)
    segments = [{"start": 0.0, "end": len(samples) / 16000 - 0.6}]
    from_file, _ = translate_speech(FRENCH, segments, language="fra", settings=settings)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded the file again")

    monkeypatch.setattr(speech_translation, "decode", refuse)
    from_samples, details = translate_speech(samples, segments, language="fra", settings=settings)

    assert from_samples == from_file
    words = from_samples[0].lower()
    assert "three" in words or "3" in words
    assert details["engine"] == "whisper-translate"
