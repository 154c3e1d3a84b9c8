"""TRANSCRIBE: faster-whisper with word timestamps and VAD; the transcript JSON plus SRT, VTT and TXT
at deterministic blob paths."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from shared.errors import Cancelled, ShutdownRequested
from shared.pipeline import StepSpec
from shared.results import Transcript

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.speech.transcriber import Transcriber
    from shared.steps import StepContext

_transcribers: dict[int, Transcriber] = {}
_lock = threading.Lock()


def transcriber(settings: Settings) -> Transcriber:
    """One per process (per Settings object), over the process's one Whisper model."""
    from shared.speech.models import transcription_model
    from shared.speech.transcriber import Transcriber

    with _lock:
        found = _transcribers.get(id(settings))
        if found is None:
            found = _transcribers[id(settings)] = Transcriber(
                settings.whisper, settings.model_cache_dir, model=transcription_model(settings)
            )
        return found


def warm_up(settings: Settings) -> None:
    # No CUDA where CUDA is configured is a clear error now, not a crash in the middle of a job.
    engine = transcriber(settings)
    engine.check_device()
    engine.load()


def process(step: StepContext) -> Transcript:
    from shared.speech.transcriber import TranscriptionCancelled

    with step.input_file() as path:
        try:
            found = transcriber(step.settings).transcribe(
                path,
                language=step.job.language,
                on_progress=step.report_progress,
                should_stop=step.should_stop,
                max_seconds=step.settings.max_audio_seconds,
            )
        except TranscriptionCancelled as error:
            if step.shutting_down:
                raise ShutdownRequested("the worker is shutting down") from error
            raise Cancelled("job cancelled during transcription") from error
    transcript = Transcript.model_validate(found)
    step.job_updates.setdefault("audio_duration_seconds", transcript.duration)
    step.details.update(
        model=found["model"],
        device=found["device"],
        compute_type=found["compute_type"],
        batch_size=found.get("batch_size"),
        audio_duration_seconds=transcript.duration,
        model_seconds=found["processing_seconds"],
        language=transcript.language,
    )
    return transcript


SPEC = StepSpec(
    name="TRANSCRIBE",
    title="Transcription",
    queue="whisper-jobs",
    queue_setting="whisper_queue",
    component="whisper",
    result=Transcript,
    inputs=("audio",),
    process=process,
    warm_up=warm_up,
)
