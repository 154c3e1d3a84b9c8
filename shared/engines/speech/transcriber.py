"""Whisper transcription with faster-whisper (CTranslate2).

A `Transcriber` belongs to one worker process. Its model loads on first use (or on `load()` at
start-up), once, under a lock, never at import. `transcribe()` decodes the audio with
`shared.engines.audio`, runs Whisper and walks the lazy segment generator inside the timed block, reporting
progress and checking for cancellation between segments.

With `batch_size > 0` (the default, 8) faster-whisper's `BatchedInferencePipeline` is used, on CPU
as on GPU: it cuts the audio at VAD pauses into pieces of up to 30 s and decodes them side by side,
which on 2 CPU cores takes about 0.4 of the sequential decoder's time on long audio with no loss of
WER, and no longer on short clips (bench/long_audio.py). `WHISPER_BATCH_SIZE=0` selects the
sequential decoder. If CUDA runs out of memory, the same audio is retried with half the batch, down
to 1, and the smaller size is kept for the rest of the process; only then does the step fail, with a
message saying what to change.

Custom vocabulary: `prompt` becomes Whisper's initial prompt and `hotwords` faster-whisper's hotwords
(both go into the prompt half of Whisper's 448-token context, so together they must fit in it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared.core.config import WhisperSettings
from shared.core.errors import ConfigurationError, PermanentError, SpeechFlowError
from shared.domain.languages import to_iso639_3, to_whisper
from shared.engines.audio import SAMPLE_RATE, AudioArray, decode
from shared.engines.speech.bundled_model import resolve_model

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
StopCheck = Callable[[], bool]


MAX_PROMPT_TOKENS = 223
"""Whisper reads at most 224 prompt tokens (half its 448-token context), one of which is its
start-of-prompt marker; faster-whisper silently drops any earlier tokens, so longer is refused."""


class TranscriptionCancelled(SpeechFlowError):
    """The transcription was stopped before it finished."""


class PromptTooLong(PermanentError):
    """the prompt and hotwords are longer than Whisper reads"""

    def __init__(self, tokens: int) -> None:
        super().__init__(
            f"the prompt and hotwords together are {tokens} tokens long; Whisper reads at most "
            f"{MAX_PROMPT_TOKENS} (224 with its start-of-prompt token): shorten them"
        )
        self.tokens = tokens


def hotwords_text(hotwords: Sequence[str] | None) -> str | None:
    """The hotwords as the one phrase faster-whisper takes, or None when there are none."""
    words = [word.strip() for word in hotwords or () if word.strip()]
    return ", ".join(words) if words else None


def count_prompt_tokens(encode: Callable[[str], Sequence[int]], *, prompt: str | None, hotwords: str | None) -> int:
    """How many prompt tokens `prompt` and `hotwords` take, each encoded as faster-whisper does
    (a leading space, then the model's tokenizer; `encode` returns the token ids of a text)."""
    return sum(len(encode(" " + text.strip())) for text in (prompt, hotwords) if text and text.strip())


class SegmentSource(Protocol):
    """What transcription needs from a model: `WhisperModel` and `BatchedInferencePipeline` both fit."""

    def transcribe(self, audio: AudioArray, **options: Any) -> tuple[Iterable[Any], Any]: ...


@dataclass(frozen=True)
class _Run:
    language: str
    language_probability: float
    duration: float
    segments: list[dict[str, Any]]


class LazyWhisperModel:
    """One `WhisperModel` per process, built on first use, safely under concurrent first uses."""

    def __init__(self, config: WhisperSettings, cache_dir: Path, *, device_setting: str = "WHISPER_DEVICE") -> None:
        """`device_setting` names the setting that chose `config.device`, for the start-up errors."""
        self._config = config
        self._cache_dir = cache_dir
        self._device_setting = device_setting
        self._model: WhisperModel | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> WhisperSettings:
        return self._config

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> WhisperModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def check_device(self) -> None:
        """Fail with a clear message, before any job is taken, when the configured device cannot work."""
        if self._config.device != "cuda":
            return
        import ctranslate2

        if ctranslate2.get_cuda_device_count() == 0:
            raise ConfigurationError(
                f"{self._device_setting} is cuda but CTranslate2 sees no CUDA device (no GPU, or the CUDA/cuDNN "
                f"runtime is missing); use {_cpu_instead(self._device_setting)}"
            )

    def _load(self) -> WhisperModel:
        self.check_device()
        from faster_whisper import WhisperModel

        source = resolve_model(self._config.model, self._cache_dir)
        started = time.perf_counter()
        model = WhisperModel(
            source,
            device=self._config.device,
            compute_type=self._config.compute_type,
            cpu_threads=self._config.cpu_threads,
        )
        if model.model.device == "cuda":  # WHISPER_DEVICE=cuda, or auto where CTranslate2 sees a GPU
            check_decodes(model, device_setting=f"{self._device_setting}={self._config.device}")
        log.info(
            "whisper model loaded",
            extra={
                "action": "model.load",
                "model": self._config.model,
                "device": self._config.device,
                "compute_type": self._config.compute_type,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return model


def check_decodes(model: WhisperModel, *, device_setting: str = "WHISPER_DEVICE=cuda") -> None:
    """Encode a second of silence and decode one token with a loaded model, so that a GPU that cannot run
    it stops the start-up instead of failing every job.

    CTranslate2 opens the CUDA math libraries (cuBLAS) only when it first computes, not when it loads a
    model: on a host without the cuBLAS its wheel was built for (CTranslate2 4.x: `libcublas.so.12`, from
    CUDA 12), the model loads and the first job fails. Here that becomes a `ConfigurationError` of one
    line, naming the setting (`device_setting`, as set) and what is missing. A fraction of a second on a GPU."""
    features = model.feature_extractor(np.zeros(SAMPLE_RATE, dtype=np.float32))
    start = model.hf_tokenizer.token_to_id("<|startoftranscript|>")
    try:
        encoded = model.encode(features)
        model.model.generate(encoded, [[start]], max_length=2)
    except RuntimeError as exc:
        raise ConfigurationError(cuda_failure_message(device_setting, exc)) from exc


def cuda_failure_message(device_setting: str, exc: BaseException) -> str:
    """One line: which setting put Whisper on the GPU (`WHISPER_DEVICE=cuda`), what CTranslate2 said, and
    what to change."""
    lines = str(exc).strip().splitlines()
    said = lines[0].strip() if lines else type(exc).__name__
    if "cannot be loaded" in said or "libcublas" in said or "libcudnn" in said:
        advice = (
            "CTranslate2 4.x needs CUDA 12's cuBLAS (libcublas.so.12) on the library path, as in the image "
            f"gpu_worker/Dockerfile builds (CUDA 12 with cuDNN 9); or use {_cpu_instead(device_setting)}"
        )
    else:
        advice = f"fix the GPU's setup or use {_cpu_instead(device_setting)}"
    return f"{device_setting} put Whisper on the GPU, but a first decode there failed ({said}): {advice}"


def _cpu_instead(device_setting: str) -> str:
    name = device_setting.partition("=")[0]
    if name == "WHISPER_DEVICE":
        return "WHISPER_DEVICE=cpu with WHISPER_COMPUTE_TYPE=int8"
    return f"{name}=cpu"


class Transcriber:
    """Audio in, transcript out: faster-whisper configured by `WhisperSettings`."""

    def __init__(
        self,
        config: WhisperSettings,
        cache_dir: Path,
        *,
        model: LazyWhisperModel | None = None,
        batched_pipeline: Callable[[Any], SegmentSource] | None = None,
    ) -> None:
        """`model` shares an already built model holder; `batched_pipeline` builds the batched
        pipeline around a loaded model (default `faster_whisper.BatchedInferencePipeline`)."""
        self._config = config
        self._model = model or LazyWhisperModel(config, cache_dir)
        self._batched_pipeline_factory = batched_pipeline
        self._pipeline: SegmentSource | None = None
        self._pipeline_lock = threading.Lock()
        self._batch_size = config.batch_size

    @property
    def model(self) -> LazyWhisperModel:
        return self._model

    @property
    def batch_size(self) -> int:
        """The batch size in use now: the configured one, or less after CUDA ran out of memory."""
        return self._batch_size

    def check_device(self) -> None:
        self._model.check_device()

    def load(self) -> None:
        """Load the model now (a worker warms up at start rather than on its first job)."""
        self._source()

    def transcribe(
        self,
        audio: Path | str | AudioArray,
        *,
        language: str | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        max_seconds: float | None = None,
        prompt: str | None = None,
        hotwords: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Transcribe `audio` (a file, or 16 kHz mono float32 samples already decoded).

        `language` may be ISO 639-3 (`eng`, `cmn`) or a Whisper code (`en`, `zh`); None lets Whisper
        detect it. `prompt` (Whisper's initial prompt) and `hotwords` steer spelling and vocabulary;
        past MAX_PROMPT_TOKENS together they raise `PromptTooLong`. `on_progress` receives the
        fraction of audio done after each segment; `should_stop` is asked between segments and ends
        the run with `TranscriptionCancelled`.
        """
        whisper_language = to_whisper(language) if language else None
        source = self._source()
        vocabulary = self._vocabulary(prompt, hotwords)
        started = time.perf_counter()
        samples = audio if not isinstance(audio, (str, Path)) else decode(audio, max_seconds=max_seconds)
        if self._batch_size > 0:
            run = self._run_batched(samples, whisper_language, on_progress, should_stop, vocabulary)
        else:
            run = self._run(
                source,
                samples=samples,
                language=whisper_language,
                on_progress=on_progress,
                should_stop=should_stop,
                extra_options=vocabulary,
            )
        processing_seconds = time.perf_counter() - started
        if on_progress is not None:
            on_progress(1.0)
        return {
            "language": to_iso639_3(run.language),
            "language_probability": run.language_probability,
            "duration": run.duration,
            "text": " ".join(segment["text"] for segment in run.segments if segment["text"]),
            "segments": run.segments,
            "model": self._config.model,
            "device": self._config.device,
            "compute_type": self._config.compute_type,
            "batch_size": self._batch_size,
            "processing_seconds": round(processing_seconds, 3),
        }

    def check_vocabulary(self, *, prompt: str | None, hotwords: Sequence[str] | None) -> int:
        """The prompt tokens `prompt` and `hotwords` take (with the model's tokenizer), or
        `PromptTooLong` past MAX_PROMPT_TOKENS."""
        tokenizer = self._model.get().hf_tokenizer
        tokens = count_prompt_tokens(
            lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
            prompt=prompt,
            hotwords=hotwords_text(hotwords),
        )
        if tokens > MAX_PROMPT_TOKENS:
            raise PromptTooLong(tokens)
        return tokens

    def _vocabulary(self, prompt: str | None, hotwords: Sequence[str] | None) -> dict[str, Any]:
        """faster-whisper's options for the custom vocabulary (none when there is none)."""
        phrase = hotwords_text(hotwords)
        text = prompt.strip() if prompt and prompt.strip() else None
        if text is None and phrase is None:
            return {}
        self.check_vocabulary(prompt=text, hotwords=hotwords)
        return {"initial_prompt": text, "hotwords": phrase}

    def _source(self) -> SegmentSource:
        model = self._model.get()
        if self._config.batch_size <= 0:
            return model
        if self._pipeline is None:
            with self._pipeline_lock:
                if self._pipeline is None:
                    if self._batched_pipeline_factory is not None:
                        self._pipeline = self._batched_pipeline_factory(model)
                    else:
                        from faster_whisper import BatchedInferencePipeline

                        self._pipeline = BatchedInferencePipeline(model)
        return self._pipeline

    def _run_batched(
        self,
        samples: AudioArray,
        language: str | None,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
        vocabulary: dict[str, Any],
    ) -> _Run:
        source = self._source()
        while True:
            batch_size = self._batch_size
            try:
                return self._run(
                    source,
                    samples=samples,
                    language=language,
                    on_progress=on_progress,
                    should_stop=should_stop,
                    extra_options={**vocabulary, "batch_size": batch_size},
                )
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
                if batch_size <= 1:
                    raise PermanentError(
                        "CUDA ran out of memory even at batch size 1; use a smaller model or compute type "
                        "(WHISPER_MODEL, WHISPER_COMPUTE_TYPE) or a GPU with more memory"
                    ) from exc
                # Another thread may already have lowered it; never raise it back.
                self._batch_size = min(self._batch_size, batch_size // 2)
                log.warning(
                    "CUDA out of memory; retrying with a smaller batch",
                    extra={
                        "action": "transcribe.oom",
                        "batch_size": batch_size,
                        "retry_with": self._batch_size,
                    },
                )

    def _run(
        self,
        source: SegmentSource,
        *,
        samples: AudioArray,
        language: str | None,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
        extra_options: dict[str, Any] | None = None,
    ) -> _Run:
        segments, info = source.transcribe(
            samples,
            language=language,
            beam_size=self._config.beam_size,
            word_timestamps=self._config.word_timestamps,
            # The batched pipeline cuts the audio where VAD finds speech; without VAD it refuses
            # audio over 30 s, so batching implies VAD. Its own VAD settings (pieces of up to 30 s,
            # cut at pauses of 160 ms) are kept: with them the batched WER on the 10-minute LibriVox
            # recording of bench/long_audio.py is lower than the sequential decoder's.
            vad_filter=self._config.vad_filter or self._config.batch_size > 0,
            **(extra_options or {}),
        )
        duration = float(info.duration)
        collected: list[dict[str, Any]] = []
        # The generator does the decoding work: it is consumed here, between the checks.
        for segment in segments:
            collected.append(_segment_dict(segment))
            if on_progress is not None and duration > 0:
                on_progress(min(1.0, float(segment.end) / duration))
            if should_stop is not None and should_stop():
                raise TranscriptionCancelled()
        return _Run(
            language=info.language,
            language_probability=float(info.language_probability),
            duration=duration,
            segments=collected,
        )


def _segment_dict(segment: Any) -> dict[str, Any]:
    return {
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": segment.text.strip(),
        "words": [
            {
                "start": round(float(word.start), 3),
                "end": round(float(word.end), 3),
                "word": word.word.strip(),
                "probability": round(float(word.probability), 4),
            }
            for word in (segment.words or [])
        ],
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    message = str(exc).lower()
    return "out of memory" in message and ("cuda" in message or "cublas" in message or "cudnn" in message)
