"""LID: the spoken language of the upload (LID_MODEL: `whisper`, the default, or `mms`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec, per_process
from shared.domain.results import LanguageResult

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.steps.context import StepContext


def _build_identifier(settings: Settings) -> Any:
    # lazy: the LID engine loads only in its worker
    from shared.engines.speech.language_id import make_language_identifier

    # lazy: the Whisper model loads only in the worker that runs the step
    from shared.engines.speech.model_cache import whisper_model_for_lid

    model = whisper_model_for_lid(settings) if settings.lid.backend != "mms" else None
    return make_language_identifier(settings, model=model)


identifier = per_process(_build_identifier)
"""The process's language identifier; where it uses Whisper, the process's Whisper model."""


def warm_up(settings: Settings) -> None:
    engine = identifier(settings)
    engine.check_device()
    engine.load()


def process(step: StepContext) -> LanguageResult:
    languages = JobOptions.of(step.job.options).languages
    with step.input_file() as path:
        found: dict[str, Any] = identifier(step.settings).identify(
            path, max_seconds=step.settings.max_audio_seconds, languages=languages
        )
    result = LanguageResult.model_validate(found)
    step.job_updates.update(
        detected_language=result.language,
        language_confidence=result.confidence,
        audio_duration_seconds=result.duration,
    )
    step.details.update(
        backend=found.get("backend"),
        model=found.get("model"),
        windows=found.get("windows"),
        low_confidence=found.get("low_confidence"),
        **({"languages": list(languages)} if languages else {}),
        audio_duration_seconds=result.duration,
    )
    return result


SPEC = StepSpec(
    name="LID",
    title="Language identification",
    queue="lid-jobs",
    queue_setting="lid_queue",
    component="lid",
    result=LanguageResult,
    inputs=("audio",),
    process=process,
    warm_up=warm_up,
)
