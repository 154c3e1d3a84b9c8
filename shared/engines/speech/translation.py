"""Speech → English with Whisper's own task="translate", segment by segment, so the English text
keeps the transcript's timings exactly. The offline default's translator for jobs with audio."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.core.config import Settings
from shared.domain.languages import to_whisper
from shared.engines.audio import SAMPLE_RATE, AudioArray, decode
from shared.engines.speech.transcriber import LazyWhisperModel

ENGINE = "whisper-translate"
PAD_BEFORE_SECONDS = 0.2
PAD_AFTER_SECONDS = 0.6

_models: dict[tuple[str, str, str], LazyWhisperModel] = {}
_models_lock = threading.Lock()


def whisper_model(settings: Settings) -> LazyWhisperModel:
    """One Whisper model per process and configuration, loaded on first use."""
    key = (settings.whisper.model, settings.whisper.device, settings.whisper.compute_type)
    with _models_lock:
        if key not in _models:
            _models[key] = LazyWhisperModel(settings.whisper, settings.model_cache_dir)
        return _models[key]


def translate_speech(
    audio: Path | str | AudioArray,
    segments: Sequence[dict[str, Any]],
    *,
    language: str | None,
    settings: Settings,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The English text of each transcript segment, translated from its slice of the audio (a file,
    or the 16 kHz mono samples a step has already decoded, which are then used as they are)."""
    model = whisper_model(settings).get()
    samples = decode(audio) if isinstance(audio, (str, Path)) else audio
    whisper_language = to_whisper(language) if language else None
    started = time.perf_counter()
    texts: list[str] = []
    for index, segment in enumerate(segments):
        # Segment ends from word timestamps fall early on the last word: pad so it is heard whole.
        start = max(0.0, float(segment["start"]) - PAD_BEFORE_SECONDS)
        end = float(segment["end"]) + PAD_AFTER_SECONDS
        piece = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        if len(piece) < SAMPLE_RATE // 10:
            texts.append("")
            continue
        parts, _info = model.transcribe(
            piece,
            task="translate",
            language=whisper_language,
            beam_size=settings.whisper.beam_size,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts.append(" ".join(part.text.strip() for part in parts).strip())
        if on_progress is not None:
            on_progress((index + 1) / len(segments))
    details = {
        "engine": ENGINE,
        "model": settings.whisper.model,
        "device": settings.whisper.device,
        "translate_seconds": round(time.perf_counter() - started, 3),
    }
    return texts, details
