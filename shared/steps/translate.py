"""TRANSLATE: the transcript in the target language, segment for segment (times and speakers kept),
through the text model (Azure OpenAI, an OpenAI-compatible endpoint, or the offline default). Offline,
a transcript made from audio is translated to English from the audio itself by Whisper, so that step is
routed to the transcription workers, where the audio and the Whisper model already are."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from shared.core.errors import Cancelled, PermanentError, ShutdownRequested
from shared.domain.languages import is_english
from shared.domain.models import Job
from shared.domain.registry import StepSpec
from shared.domain.results import Translation
from shared.domain.workflow import AUDIO_WORKFLOWS, JobState
from shared.engines.text import TextModel, choose_backend, make_text_model
from shared.steps.inputs import TranscriptInput, load_transcript

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.steps.context import StepContext


def speaks_from_audio(settings: Settings, *, target_language: str | None, has_audio: bool) -> bool:
    """Whether this translation is Whisper's, from the audio (offline, into English, audio at hand)."""
    return choose_backend(settings.llm) == "offline" and is_english(target_language or "en") and has_audio


def route(settings: Settings, job: JobState) -> str | None:
    if speaks_from_audio(settings, target_language=job.target_language, has_audio=job.workflow_type in AUDIO_WORKFLOWS):
        return "TRANSCRIBE"
    return None


def process(step: StepContext) -> Translation:
    found = load_transcript(step)
    transcript = found.transcript
    source = transcript.language or "und"
    target = step.job.target_language or "en"
    texts = [segment.text for segment in transcript.segments]
    from_audio = transcript.timed and found.audio_job_id is not None
    if speaks_from_audio(step.settings, target_language=target, has_audio=from_audio):
        translated = _translate_from_audio(step, found)
    else:
        model = make_text_model(step.settings, should_stop=step.should_stop)
        translated = model.translate(texts, source_language=source, target_language=target) if texts else []
        record_model(step, model)
    segments = [
        segment.model_copy(update={"text": text, "words": None})
        for segment, text in zip(transcript.segments, translated, strict=True)
    ]
    translation = Translation(
        language=target,
        text=" ".join(text for text in translated if text),
        segments=segments,
        source_language=source,
        target_language=target,
        speakers=transcript.speakers,
        engine=step.details["engine"],
        model=step.details["model"],
    )
    return translation


def _translate_from_audio(step: StepContext, found: TranscriptInput) -> list[str]:
    # lazy: the Whisper model loads only in the worker that runs the step
    from shared.engines.speech.translation import translate_speech

    assert found.audio_job_id is not None
    blob = _audio_blob(step, found.audio_job_id)

    def progress(fraction: float) -> None:
        if step.shutting_down:
            raise ShutdownRequested("the worker is shutting down")
        if step.should_stop():
            raise Cancelled("the job was cancelled")
        step.report_progress(fraction)

    segments = [segment.model_dump(include={"start", "end", "text"}) for segment in found.transcript.segments]
    with tempfile.TemporaryDirectory(prefix="speechflow-") as folder:
        path = Path(folder) / "audio"
        step.runtime.blobs.download_to(step.settings.audio_container, blob, path)
        texts, details = translate_speech(
            path, segments, language=found.transcript.language, settings=step.settings, on_progress=progress
        )
    step.details.update(details)
    return texts


def _audio_blob(step: StepContext, job_id: uuid.UUID) -> str:

    if job_id == step.job.id and step.job.audio_blob_path:
        return step.job.audio_blob_path
    with step.runtime.sessions() as session:
        blob = session.scalar(select(Job.audio_blob_path).where(Job.id == job_id))
    if not blob:
        raise PermanentError(f"job {job_id} has no audio to translate from")
    return blob


def record_model(step: StepContext, model: TextModel) -> None:
    step.details.update(engine=model.engine, model=model.model, usage=model.usage.as_dict())


SPEC = StepSpec(
    name="TRANSLATE",
    title="Translation",
    queue="azure-ai-jobs",
    queue_setting="azure_ai_queue",
    component="azure-ai",
    result=Translation,
    inputs=("transcript",),
    process=process,
    route=route,
)
