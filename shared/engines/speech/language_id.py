"""Spoken language identification over the whole file, not just its first 30 seconds.

Whisper's own detection (and the anchors' measurement) looks at the first 30 s of audio, silence and
music included. Here the file is first scanned with Silero VAD (streamed, a few minutes at a time),
then up to `windows` windows of `window_seconds` of *speech* are taken, spread evenly over all the
speech in the file. Each window is scored by a backend, and the scores are averaged, weighted by how
much speech each window holds. The result names the language in ISO 639-3, its confidence, the top
candidates, and whether the confidence is below the configured threshold.

Backends:
- `WhisperLanguageIdentifier`: faster-whisper `detect_language` (all ~100 Whisper languages).
- `MmsLanguageIdentifier`: a transformers audio-classification model such as `facebook/mms-lid-126`,
  whose labels are ISO 639-3 already. torch and transformers are imported only when it loads, so the
  Whisper workers never pay for them.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared.core.config import LidSettings, Settings, WhisperSettings
from shared.core.errors import ConfigurationError
from shared.domain.languages import UnsupportedLanguage, to_iso639_3
from shared.engines.audio import (
    SAMPLE_RATE,
    AudioArray,
    AudioTooLong,
    EmptyAudioFile,
    decode_window,
    iter_chunks,
    probe,
)
from shared.engines.speech.transcriber import LazyWhisperModel

if TYPE_CHECKING:
    import torch
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

TOP_CANDIDATES = 5
WHISPER_WINDOW_SECONDS = 30.0
"""What Whisper sees at once; its detection pads or trims every input to this."""
_VAD_CHUNK_SECONDS = 300.0


class LanguageIdentifier(Protocol):
    """Which language is spoken in an audio file."""

    def identify(
        self,
        audio: Path | str | AudioArray,
        *,
        max_seconds: float | None = None,
        languages: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The language of a file or of 16 kHz mono samples already decoded (one of `languages`, ISO
        639-3, when given):
        `{language, confidence, candidates: [{language, probability}], low_confidence, windows,
        speech_seconds, duration, backend, model}`, languages in ISO 639-3."""
        ...


@dataclass(frozen=True)
class Window:
    """A stretch of speech to score: one or more spans of the file, in seconds."""

    spans: tuple[tuple[float, float], ...]

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.spans)


Scores = dict[str, float]
"""ISO 639-3 code → probability, for one window."""


def find_speech(
    audio: Path | str | AudioArray, *, max_seconds: float | None = None, min_silence_ms: int = 500
) -> list[tuple[float, float]]:
    """Where the audio (a file, or 16 kHz mono samples) has speech, as (start, end) seconds, found by
    Silero VAD a few minutes at a time; pauses shorter than `min_silence_ms` stay inside a span."""
    return _scan(audio, max_seconds=max_seconds, min_silence_ms=min_silence_ms)[0]


def _scan(
    audio: Path | str | AudioArray, *, max_seconds: float | None, min_silence_ms: int = 500
) -> tuple[list[tuple[float, float]], float]:
    """The speech spans and the length of the audio in seconds, from one pass over it."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    # The padding is at most half the shortest pause, so that two spans never overlap.
    options = VadOptions(
        min_speech_duration_ms=250, min_silence_duration_ms=min_silence_ms, speech_pad_ms=min(200, min_silence_ms // 2)
    )
    spans: list[tuple[float, float]] = []
    offset = 0.0
    for chunk in _pieces(audio, max_seconds=max_seconds):
        for found in get_speech_timestamps(chunk, options, sampling_rate=SAMPLE_RATE):
            start = offset + found["start"] / SAMPLE_RATE
            end = offset + found["end"] / SAMPLE_RATE
            if spans and start - spans[-1][1] < 1e-3:
                # Speech running across a chunk boundary is one span.
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        offset += len(chunk) / SAMPLE_RATE
    return spans, offset


def _pieces(audio: Path | str | AudioArray, *, max_seconds: float | None) -> Iterable[AudioArray]:
    """The audio _VAD_CHUNK_SECONDS at a time: streamed from a file, sliced from samples."""
    if isinstance(audio, (str, Path)):
        return iter_chunks(audio, chunk_seconds=_VAD_CHUNK_SECONDS, max_seconds=max_seconds)
    if max_seconds is not None and len(audio) > math.ceil(max_seconds * SAMPLE_RATE):
        raise AudioTooLong(max_seconds)
    step = round(_VAD_CHUNK_SECONDS * SAMPLE_RATE)
    return (audio[start : start + step] for start in range(0, len(audio), step))


def plan_windows(speech: Sequence[tuple[float, float]], *, count: int, window_seconds: float) -> list[Window]:
    """Up to `count` windows of speech, spread evenly over all of it.

    With less speech than `count` full windows, the speech is cut into equal windows, none longer
    than `window_seconds`, so every second of speech is scored once. With more, `count` windows of
    `window_seconds` are centred at evenly spaced points of the speech.
    """
    total = sum(end - start for start, end in speech)
    if total <= 0 or count <= 0 or window_seconds <= 0:
        return []
    if total <= count * window_seconds:
        pieces = max(1, math.ceil(total / window_seconds - 1e-9))
        length = total / pieces
        bounds = [(index * length, (index + 1) * length) for index in range(pieces)]
    else:
        step = total / count
        bounds = []
        for index in range(count):
            start = min(max(0.0, (index + 0.5) * step - window_seconds / 2), total - window_seconds)
            bounds.append((start, start + window_seconds))
    return [Window(spans=_speech_to_file_spans(speech, start, end)) for start, end in bounds]


def combine(
    scored: Sequence[tuple[Scores, float]], *, low_confidence: float, languages: Sequence[str] | None = None
) -> dict[str, Any]:
    """Average the windows' probabilities, each weighted by its seconds of speech. With `languages`
    (ISO 639-3), the answer is one of them: their probabilities, renormalised to sum to 1."""
    totals: dict[str, float] = {}
    weight_sum = sum(weight for _, weight in scored)
    for scores, weight in scored:
        share = weight / weight_sum if weight_sum > 0 else 1.0 / len(scored)
        for language, probability in scores.items():
            totals[language] = totals.get(language, 0.0) + probability * share
    unheard = False
    if languages:
        allowed = {language: totals.get(language, 0.0) for language in dict.fromkeys(languages)}
        mass = sum(allowed.values())
        unheard = mass <= 0  # none of them scored: no preference between them
        totals = {
            language: (probability / mass if mass > 0 else 1.0 / len(allowed))
            for language, probability in allowed.items()
        }
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    language, confidence = ranked[0]
    return {
        "language": language,
        "confidence": round(confidence, 4),
        "candidates": [
            {"language": code, "probability": round(probability, 4)} for code, probability in ranked[:TOP_CANDIDATES]
        ],
        "low_confidence": confidence < low_confidence or unheard,
        "windows": len(scored),
    }


class _WindowedIdentifier(ABC):
    """VAD, window planning and combination; a backend supplies `_score` for one window's audio."""

    backend = ""

    def __init__(self, *, windows: int, window_seconds: float, low_confidence: float) -> None:
        self._windows = windows
        self._window_seconds = window_seconds
        self._low_confidence = low_confidence

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model's name or path, as reported with each result."""

    @abstractmethod
    def check_device(self) -> None:
        """Raise `ConfigurationError` when the configured device is not there."""

    @abstractmethod
    def load(self) -> None:
        """Load the model now rather than on the first file."""

    def identify(
        self,
        audio: Path | str | AudioArray,
        *,
        max_seconds: float | None = None,
        languages: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The language of `audio`: a file (streamed for VAD, then only the windows decoded again) or
        16 kHz mono samples a step has already decoded (nothing decoded here); with `languages` (ISO
        639-3, the ones the client says are possible), one of those."""
        if isinstance(audio, (str, Path)) and max_seconds is not None:
            # The header's length turns an over-long upload away before any decoding.
            declared = probe(audio).duration_seconds
            if declared > max_seconds:
                raise AudioTooLong(max_seconds)
        speech, duration = _scan(audio, max_seconds=max_seconds)
        windows = plan_windows(speech, count=self._windows, window_seconds=self._window_seconds)
        heard_speech = bool(windows)
        if not heard_speech:
            # No speech found: still answer from the audio there is, flagged as unreliable.
            windows = plan_windows([(0.0, duration)], count=1, window_seconds=self._window_seconds)
        if not windows:
            raise EmptyAudioFile("the audio holds no samples")
        scored = [(self._score(_window_audio(audio, window)), window.speech_seconds) for window in windows]
        result = combine(scored, low_confidence=self._low_confidence, languages=languages)
        result["low_confidence"] = result["low_confidence"] or not heard_speech
        result.update(
            speech_seconds=round(sum(end - start for start, end in speech), 3),
            duration=round(duration, 3),
            backend=self.backend,
            model=self.model_name,
        )
        return result

    @abstractmethod
    def _score(self, audio: AudioArray) -> Scores:
        """Language probabilities for one window of 16 kHz mono audio."""


class WhisperLanguageIdentifier(_WindowedIdentifier):
    """Whisper's language detection, applied to speech windows over the whole file."""

    backend = "whisper"

    def __init__(
        self,
        model: LazyWhisperModel,
        *,
        windows: int = 5,
        window_seconds: float = 30.0,
        low_confidence: float = 0.5,
    ) -> None:
        super().__init__(
            windows=windows,
            window_seconds=min(window_seconds, WHISPER_WINDOW_SECONDS),
            low_confidence=low_confidence,
        )
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model.config.model

    def check_device(self) -> None:
        self._model.check_device()

    def load(self) -> None:
        self._model.get()

    def identify_first_window(self, path: Path | str | AudioArray) -> dict[str, Any]:
        """The usual method, for comparison: Whisper on the first 30 s of the file, silence and all."""
        audio = _window_audio(path, Window(spans=((0.0, WHISPER_WINDOW_SECONDS),)))
        if not len(audio):
            raise EmptyAudioFile("the audio holds no samples")
        result = combine([(self._score(audio), len(audio) / SAMPLE_RATE)], low_confidence=self._low_confidence)
        result.update(backend="whisper-first-30s", model=self.model_name)
        return result

    def _score(self, audio: AudioArray) -> Scores:
        return whisper_scores(self._model.get(), audio)


def whisper_scores(model: WhisperModel, audio: AudioArray) -> Scores:
    """Whisper's probability of each language (ISO 639-3) for up to 30 s of 16 kHz mono audio."""
    # Padded with silence to Whisper's 30 s, as Whisper was trained, rather than with zero features
    # (which are not silence): measured on the 27 clips of bench/languages.py, 25 named right against 23.
    short = round(WHISPER_WINDOW_SECONDS * SAMPLE_RATE) - len(audio)
    if short > 0:
        audio = np.pad(audio, (0, short))
    _, _, probabilities = model.detect_language(audio=audio)
    return _merge_codes((code, float(probability)) for code, probability in probabilities)


class MmsLanguageIdentifier(_WindowedIdentifier):
    """A transformers audio-classification LID model (MMS-LID), loaded on first use."""

    backend = "mms"

    def __init__(
        self,
        model_name_or_path: str,
        device: str = "cpu",
        *,
        windows: int = 5,
        window_seconds: float = 30.0,
        low_confidence: float = 0.5,
    ) -> None:
        super().__init__(windows=windows, window_seconds=window_seconds, low_confidence=low_confidence)
        self._model_name_or_path = model_name_or_path
        self._device_setting = device
        self._loaded: tuple[Any, Any, list[str], str] | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._model_name_or_path

    def check_device(self) -> None:
        """Fail at start, not mid-job, when LID_DEVICE=cuda and torch sees no GPU."""
        import torch

        _torch_device(self._device_setting, torch)

    def load(self) -> None:
        self._get()

    def _get(self) -> tuple[Any, Any, list[str], str]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> tuple[Any, Any, list[str], str]:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        device = _torch_device(self._device_setting, torch)
        extractor = AutoFeatureExtractor.from_pretrained(self._model_name_or_path)
        model = AutoModelForAudioClassification.from_pretrained(self._model_name_or_path)
        model.to(device)
        model.eval()
        id2label = model.config.id2label
        labels = [_label_to_iso(str(id2label[index])) for index in range(len(id2label))]
        log.info(
            "mms lid model loaded",
            extra={
                "action": "model.load",
                "model": self._model_name_or_path,
                "device": device,
                "labels": len(labels),
            },
        )
        return extractor, model, labels, device

    def _score(self, audio: AudioArray) -> Scores:
        import torch

        extractor, model, labels, device = self._get()
        inputs = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
        with torch.inference_mode():
            logits: torch.Tensor = model(**inputs).logits
        probabilities = torch.softmax(logits[0].float(), dim=-1).cpu().numpy()
        return _merge_codes(zip(labels, (float(value) for value in probabilities), strict=True))


def make_language_identifier(settings: Settings, *, model: LazyWhisperModel | None = None) -> _WindowedIdentifier:
    """The backend `LID_MODEL` names, configured from `settings` (nothing is loaded yet)."""
    lid: LidSettings = settings.lid
    if lid.backend == "mms":
        return MmsLanguageIdentifier(
            lid.mms_model,
            lid.device,
            windows=lid.windows,
            window_seconds=lid.window_seconds,
            low_confidence=lid.low_confidence,
        )
    if model is None:
        model = LazyWhisperModel(
            whisper_settings_for_lid(settings), settings.model_cache_dir, device_setting="LID_DEVICE"
        )
    return WhisperLanguageIdentifier(
        model, windows=lid.windows, window_seconds=lid.window_seconds, low_confidence=lid.low_confidence
    )


def whisper_settings_for_lid(settings: Settings) -> WhisperSettings:
    """The transcription model's settings, on the LID worker's device (int8 on CPU, float16 on CUDA)."""
    same_device = settings.lid.device == settings.whisper.device
    compute_type = settings.whisper.compute_type if same_device else _default_compute_type(settings.lid.device)
    return settings.whisper.model_copy(
        update={"device": settings.lid.device, "compute_type": compute_type, "batch_size": 0}
    )


def _default_compute_type(device: str) -> str:
    return "float16" if device == "cuda" else "int8" if device == "cpu" else "default"


def _window_audio(audio: Path | str | AudioArray, window: Window) -> AudioArray:
    if isinstance(audio, (str, Path)):
        pieces = [decode_window(audio, start, end - start) for start, end in window.spans]
    else:
        pieces = [audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)] for start, end in window.spans]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _speech_to_file_spans(
    speech: Sequence[tuple[float, float]], start: float, end: float
) -> tuple[tuple[float, float], ...]:
    """The file spans covering [start, end) of the speech-only timeline."""
    spans = []
    elapsed = 0.0
    for span_start, span_end in speech:
        length = span_end - span_start
        overlap_start = max(start, elapsed)
        overlap_end = min(end, elapsed + length)
        if overlap_end - overlap_start > 1e-9:
            spans.append((span_start + overlap_start - elapsed, span_start + overlap_end - elapsed))
        elapsed += length
        if elapsed >= end:
            break
    return tuple(spans)


def _merge_codes(pairs: Iterable[tuple[str, float]]) -> Scores:
    """Probabilities keyed by ISO 639-3; labels that map to the same code add up."""
    merged: Scores = {}
    for label, probability in pairs:
        code = _label_to_iso(label)
        merged[code] = merged.get(code, 0.0) + probability
    return merged


def _label_to_iso(label: str) -> str:
    try:
        return to_iso639_3(label)
    except UnsupportedLanguage:
        return label.strip().lower()


def _torch_device(setting: str, torch: Any) -> str:
    if setting == "cpu":
        return "cpu"
    available = bool(torch.cuda.is_available())
    if setting == "cuda" and not available:
        raise ConfigurationError("LID_DEVICE is cuda but torch sees no CUDA device; use LID_DEVICE=cpu")
    return "cuda" if available else "cpu"


__all__ = [
    "LanguageIdentifier",
    "MmsLanguageIdentifier",
    "WhisperLanguageIdentifier",
    "Window",
    "combine",
    "find_speech",
    "make_language_identifier",
    "plan_windows",
    "whisper_scores",
]
