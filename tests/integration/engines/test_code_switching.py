"""Code-switching with the bundled Whisper model: an English recording stays English in one run with the
same words as without, a Spanish-and-English one (eSpeak NG Spanish, which Whisper alone detects as
Latin) is settled by decoding, `languages` narrows the choice, and a cancel is heard before decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.core.config import WhisperSettings
from shared.engines.audio import SAMPLE_RATE, AudioArray, decode
from shared.engines.speech.code_switching import transcribe_code_switching
from shared.engines.speech.language_id import whisper_scores
from shared.engines.speech.transcriber import Transcriber, TranscriptionCancelled
from tests.support.wer import wer

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    config = WhisperSettings(model="bundled", device="cpu", compute_type="int8", cpu_threads=2, beam_size=5)
    engine = Transcriber(config, tmp_path_factory.mktemp("models"))
    engine.load()
    return engine


def joined(*clips: str, gap: float = 0.6) -> AudioArray:
    silence = np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for clip in clips:
        pieces += [decode(AUDIO / f"{clip}.wav"), silence]
    return np.concatenate(pieces)


def test_a_one_language_recording_is_one_run_with_the_usual_words(transcriber: Transcriber) -> None:
    audio = joined("en/librivox-0870", "en/kokoro-hello_world", "en/librivox-0890")
    found = transcribe_code_switching(transcriber, audio)
    plain = transcriber.transcribe(audio, language="eng")
    assert found["runs"] == 1 and found["stretches"] == 3
    assert {segment["language"] for segment in found["segments"]} == {"eng"}
    assert found["language"] == "eng" and [entry["language"] for entry in found["languages"]] == ["eng"]
    assert wer(plain["text"], found["text"]) <= 0.05


def test_an_unclear_stretch_is_settled_by_decoding_it(transcriber: Transcriber) -> None:
    # Whisper's detection alone calls this clip Latin (0.34–0.45 against Spanish's 0.2–0.35 on the CPUs
    # measured, in the recording and alone), so without settling this test fails (checked with
    # SURE_SCORE = 0); a CPU where detection alone is sure of Spanish passes it without settling.
    spanish = decode(AUDIO / "es" / "espeak-pedido.wav")
    scores = whisper_scores(transcriber.model.get(), spanish)
    assert scores.get("spa", 0.0) > 0.05, scores  # Spanish is at least a candidate to decode in

    audio = joined("en/librivox-0920", "es/espeak-pedido", "en/librivox-0930")
    found = transcribe_code_switching(transcriber, audio)
    languages = [segment["language"] for segment in found["segments"]]
    assert "spa" in languages, found["segments"]
    spanish_text = " ".join(s["text"] for s in found["segments"] if s["language"] == "spa").lower()
    assert "pedido" in spanish_text or "estado" in spanish_text, spanish_text
    assert languages[0] == languages[-1] == "eng"


def test_languages_narrow_each_stretch(transcriber: Transcriber) -> None:
    audio = joined("fr/kokoro-pangrama", "en/librivox-0870")
    found = transcribe_code_switching(transcriber, audio, languages=["eng", "deu"])
    assert {segment["language"] for segment in found["segments"]} <= {"eng", "deu"}


def test_a_cancel_is_heard_before_any_decoding(transcriber: Transcriber) -> None:
    audio = joined("en/librivox-0870", "fr/kokoro-pangrama")
    with pytest.raises(TranscriptionCancelled):
        transcribe_code_switching(transcriber, audio, should_stop=lambda: True)
