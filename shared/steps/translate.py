"""TRANSLATE: the transcript in the target language, segment for segment (times and speakers kept),
through the text model (Azure OpenAI, an OpenAI-compatible endpoint, or the offline default). Offline,
a transcript made from audio is translated to English from the audio itself by Whisper, so that step is
routed to the transcription workers, where the audio and the Whisper model already are."""

from __future__ import annotations

import functools
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from shared.core.errors import Cancelled, PermanentError, ShutdownRequested
from shared.domain.languages import is_english, same_language
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
    target = step.job.target_language or "en"
    spoken = [segment.language or transcript.language or "und" for segment in transcript.segments]
    # A code-switching transcript says each segment's language: each is translated from its own, and a
    # segment already in the target language is kept as it is.
    todo: dict[str, list[int]] = {}
    for index, language in enumerate(spoken):
        if not same_language(language, target):
            todo.setdefault(language, []).append(index)
    translated = [segment.text for segment in transcript.segments]
    from_audio = transcript.timed and found.audio_job_id is not None
    if not todo:
        step.details.update(engine="none", model=None)
    elif speaks_from_audio(step.settings, target_language=target, has_audio=from_audio):
        _translate_from_audio(step, found, todo, translated)
    else:
        model = make_text_model(step.settings, should_stop=step.should_stop)
        for language, indexes in todo.items():
            texts = [transcript.segments[index].text for index in indexes]
            for index, text in zip(
                indexes, model.translate(texts, source_language=language, target_language=target), strict=True
            ):
                translated[index] = text
        record_model(step, model)
    segments = [
        segment.model_copy(update={"text": text, "words": None})
        for segment, text in zip(transcript.segments, translated, strict=True)
    ]
    languages = list(dict.fromkeys(spoken))
    translation = Translation(
        language=target,
        text=" ".join(text for text in translated if text),
        segments=segments,
        source_language=languages[0] if len(languages) == 1 else "mul" if languages else transcript.language or "und",
        target_language=target,
        speakers=transcript.speakers,
        engine=step.details["engine"],
        model=step.details["model"],
    )
    return translation


def _translate_from_audio(
    step: StepContext, found: TranscriptInput, todo: dict[str, list[int]], translated: list[str]
) -> None:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode

    # lazy: the Whisper model loads only in the worker that runs the step
    from shared.engines.speech.translation import translate_speech

    assert found.audio_job_id is not None
    blob = _audio_blob(step, found.audio_job_id)
    total = sum(len(indexes) for indexes in todo.values())
    done = 0

    def progress(fraction: float, *, share: int = 0) -> None:
        if step.shutting_down:
            raise ShutdownRequested("the worker is shutting down")
        if step.should_stop():
            raise Cancelled("the job was cancelled")
        step.report_progress((done + fraction * share) / total)

    with tempfile.TemporaryDirectory(prefix="speechflow-") as folder:
        path = Path(folder) / "audio"
        step.runtime.blobs.download_to(step.settings.audio_container, blob, path)
        samples = decode(path)
    for language, indexes in todo.items():
        segments = [found.transcript.segments[index].model_dump(include={"start", "end", "text"}) for index in indexes]
        texts, details = translate_speech(
            samples,
            segments,
            language=language if language != "und" else None,
            settings=step.settings,
            on_progress=functools.partial(progress, share=len(indexes)),
        )
        for index, text in zip(indexes, texts, strict=True):
            translated[index] = text
        done += len(indexes)
        step.details.update(details)


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
