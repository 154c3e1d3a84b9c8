"""PII redaction on real transcripts: espeak-ng speech with spoken numbers and an e-mail address,
transcribed by the bundled Whisper model, then redacted (shared/engines/pii.py).

Whisper writes the spoken digits in its own ways ("202-5-5-5-0143", "4", "-5", "-3", …) and hears
"dot com" as ".com"; the assertions are about what must hold whatever it writes: no digit and no
address is left, the placeholder spans the masked words' time, and every other word keeps its timing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import WhisperSettings
from shared.engines.pii import Redactor, default_redactor
from shared.engines.speech.transcriber import Transcriber

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "en"
CLIPS = {"phone": "[PHONE]", "card": "[CREDIT_CARD]", "email": "[EMAIL]"}

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    config = WhisperSettings(model="bundled", device="cpu", compute_type="int8", cpu_threads=2, beam_size=5)
    engine = Transcriber(config, tmp_path_factory.mktemp("models"))
    engine.load()
    return {name: engine.transcribe(AUDIO / f"espeak-pii_{name}.wav", language="eng") for name in CLIPS}


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return default_redactor()


def words_of(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [word for segment in segments for word in segment["words"]]


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_spoken_pii_is_masked_with_its_placeholder_and_the_timings_kept(
    transcripts: dict[str, dict[str, Any]], redactor: Redactor, name: str
) -> None:
    segments = transcripts[name]["segments"]
    before = words_of(segments)
    redacted = redactor.redact_transcript(segments, language="eng")
    after = words_of(redacted)
    text = " ".join(segment["text"] for segment in redacted)

    assert CLIPS[name] in text, (transcripts[name]["text"], text)
    assert not re.search(r"\d", text), text
    assert "@" not in text and ".com" not in text, text
    placeholders = [word for word in after if CLIPS[name] in word["word"]]
    assert len(placeholders) == 1, after
    # The kept words are the original ones, timings and all; the placeholder spans the masked ones.
    kept = [word for word in after if word is not placeholders[0]]
    assert all(word in before for word in kept)
    first_masked = next(word for word in before if word not in kept)
    last_masked = [word for word in before if word not in kept][-1]
    assert placeholders[0]["start"] == first_masked["start"]
    assert placeholders[0]["end"] == last_masked["end"]
    assert [(s["start"], s["end"]) for s in redacted] == [(s["start"], s["end"]) for s in segments]
    # The words before the entity still say what was said ("call me", "card number", "email").
    assert len(kept) >= 3


def test_the_unredacted_transcripts_did_contain_the_numbers(transcripts: dict[str, dict[str, Any]]) -> None:
    """Guards the test above against a model that heard nothing worth masking."""
    assert len(re.findall(r"\d", transcripts["phone"]["text"])) >= 10
    assert len(re.findall(r"\d", transcripts["card"]["text"])) >= 16
    assert "com" in transcripts["email"]["text"]
