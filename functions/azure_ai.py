"""The azure-ai-jobs function: TRANSLATE and SUMMARIZE steps through the text model (Azure OpenAI,
an OpenAI-compatible endpoint, or the offline default). The local host's pump calls the same
`handle_step_message`.

The transcript comes from this job's TRANSCRIBE result, from the job named by `source_job_id`, or
from the uploaded file (plain text, or this service's transcript JSON).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from pydantic import ValidationError
from sqlalchemy import select

from shared.config import get_settings
from shared.errors import BlobNotFound, Cancelled, PermanentError, ShutdownRequested, TransientError
from shared.llm import TextModel, choose_backend, make_text_model
from shared.llm.chunks import split_sentences
from shared.llm.speech_translation import translate_speech
from shared.messages import StepMessage
from shared.models import Job
from shared.runtime import Runtime, process_runtime
from shared.speech.languages import is_english
from shared.steps import StepContext, run_step
from shared.subtitles import to_srt, to_vtt

log = logging.getLogger(__name__)

bp = func.Blueprint()

BUSY_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class Transcript:
    language: str | None
    text: str
    segments: list[dict[str, Any]]
    """Each with `text`, and `start`/`end` in seconds where the transcript has timings."""
    audio_job_id: uuid.UUID | None
    """A job whose uploaded audio this transcript was made from, if any."""

    @property
    def timed(self) -> bool:
        return bool(self.segments) and all(
            isinstance(s.get("start"), (int, float)) and isinstance(s.get("end"), (int, float)) for s in self.segments
        )


def load_transcript(step: StepContext) -> Transcript:
    job = step.job
    if job.source_job_id is not None:
        try:
            data = step.read_result("TRANSCRIBE", job_id=job.source_job_id)
        except BlobNotFound as error:
            raise PermanentError(f"source job {job.source_job_id} has no transcript") from error
        return _transcript(data, fallback_language=job.language, audio_job_id=job.source_job_id)
    if job.workflow_type in ("translate_only", "summarize_only"):
        with step.input_file() as path:
            return parse_uploaded_transcript(path.read_bytes(), fallback_language=job.language)
    try:
        data = step.read_result("TRANSCRIBE")
    except BlobNotFound as error:
        raise PermanentError("the job has no transcript") from error
    return _transcript(data, fallback_language=job.language, audio_job_id=job.id)


def parse_uploaded_transcript(content: bytes, *, fallback_language: str | None) -> Transcript:
    """This service's transcript JSON ({language, text, segments}), or plain UTF-8 text."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PermanentError("the uploaded transcript is neither UTF-8 text nor transcript JSON") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("segments") or data.get("text"), (list, str)):
        return _transcript(data, fallback_language=fallback_language, audio_job_id=None)
    if not text.strip():
        raise PermanentError("the uploaded transcript is empty")
    segments = [{"start": None, "end": None, "text": sentence} for sentence in split_sentences(text)]
    return Transcript(language=fallback_language, text=text.strip(), segments=segments, audio_job_id=None)


def _transcript(data: dict[str, Any], *, fallback_language: str | None, audio_job_id: uuid.UUID | None) -> Transcript:
    raw = data.get("segments")
    segments = [
        {"start": s.get("start"), "end": s.get("end"), "text": str(s.get("text", "")).strip()}
        for s in (raw if isinstance(raw, list) else [])
        if isinstance(s, dict)
    ]
    text = str(data.get("text") or " ".join(s["text"] for s in segments if s["text"])).strip()
    if not segments and text:
        segments = [{"start": None, "end": None, "text": sentence} for sentence in split_sentences(text)]
    language = data.get("language") if isinstance(data.get("language"), str) else None
    return Transcript(language=language or fallback_language, text=text, segments=segments, audio_job_id=audio_job_id)


def translate_step(step: StepContext) -> dict[str, Any]:
    transcript = load_transcript(step)
    source = transcript.language or "und"
    target = step.job.target_language or "en"
    texts = [segment["text"] for segment in transcript.segments]
    offline = choose_backend(step.settings.llm) == "offline"
    if offline and is_english(target) and transcript.timed and transcript.audio_job_id is not None:
        translated = _translate_from_audio(step, transcript)
    else:
        model = make_text_model(step.settings, should_stop=step.should_stop)
        translated = model.translate(texts, source_language=source, target_language=target) if texts else []
        _record(step, model)
    segments = [
        {"start": segment["start"], "end": segment["end"], "text": text}
        for segment, text in zip(transcript.segments, translated, strict=True)
    ]
    if transcript.timed:
        step.put_result_file("srt", to_srt(segments), content_type="application/x-subrip")
        step.put_result_file("vtt", to_vtt(segments), content_type="text/vtt")
    return {
        "text": " ".join(text for text in translated if text),
        "segments": segments,
        "source_language": source,
        "target_language": target,
        "engine": step.details["engine"],
        "model": step.details["model"],
    }


def _translate_from_audio(step: StepContext, transcript: Transcript) -> list[str]:
    assert transcript.audio_job_id is not None
    blob = _audio_blob(step, transcript.audio_job_id)

    def progress(fraction: float) -> None:
        if step.shutting_down:
            raise ShutdownRequested("the worker is shutting down")
        if step.should_stop():
            raise Cancelled("the job was cancelled")
        step.report_progress(fraction)

    with tempfile.TemporaryDirectory(prefix="speechflow-") as folder:
        path = Path(folder) / "audio"
        step.runtime.blobs.download_to(step.settings.audio_container, blob, path)
        texts, details = translate_speech(
            path, transcript.segments, language=transcript.language, settings=step.settings, on_progress=progress
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


def summarize_step(step: StepContext) -> dict[str, Any]:
    transcript = load_transcript(step)
    text = "\n".join(segment["text"] for segment in transcript.segments if segment["text"]) or transcript.text
    language = transcript.language
    model = make_text_model(step.settings, should_stop=step.should_stop)
    if model.engine == "extractive" and not is_english(language):
        # An extractive summary quotes its input: quote the English translation where there is one.
        english = _english_translation(step)
        if english is not None:
            text, language = english, "en"
    summary = model.summarize(text, language=language) if text.strip() else {"summary": "", "key_points": []}
    _record(step, model)
    return {**summary, "engine": model.engine, "model": model.model}


def _english_translation(step: StepContext) -> str | None:
    try:
        data = step.read_result("TRANSLATE", job_id=step.job.source_job_id or step.job.id)
    except BlobNotFound:
        return None
    if not is_english(data.get("target_language")):
        return None
    texts = [str(s.get("text", "")) for s in data.get("segments", []) if isinstance(s, dict)]
    return "\n".join(t for t in texts if t.strip()) or None


def _record(step: StepContext, model: TextModel) -> None:
    step.details.update(engine=model.engine, model=model.model, usage=model.usage.as_dict())


PROCESSORS = {"TRANSLATE": translate_step, "SUMMARIZE": summarize_step}


def worker_id() -> str:
    return f"azure-ai-{socket.gethostname()}-{os.getpid()}"


def handle_step_message(runtime: Runtime, body: str) -> None:
    """Run one TRANSLATE or SUMMARIZE step. A malformed message raises ValueError (dead-lettered);
    a step another live worker holds is waited for once, then left to redelivery (TransientError)."""
    try:
        message = StepMessage.model_validate_json(body)
    except ValidationError as error:
        raise ValueError(f"malformed step message: {error.errors()[:1]}") from error
    processor = PROCESSORS.get(message.step_type)
    if processor is None:
        raise ValueError(f"azure-ai-jobs does not run {message.step_type} steps")
    outcome = run_step(runtime, message, processor, worker_id=worker_id())
    if outcome != "busy":
        return
    wait = runtime.settings.lock_duration_seconds + BUSY_MARGIN_SECONDS
    log.info(
        "step held by another worker; waiting for its lease",
        extra={"action": "step_busy", "job_id": str(message.job_id), "step_type": message.step_type},
    )
    time.sleep(wait)
    if run_step(runtime, message, processor, worker_id=worker_id()) == "busy":
        raise TransientError(f"{message.step_type} of job {message.job_id} is still held by another worker")


@bp.function_name("azure_ai")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=get_settings().azure_ai_queue,
    connection="SERVICE_BUS_CONNECTION_STRING",
)
def azure_ai_trigger(message: func.ServiceBusMessage) -> None:
    """Service Bus trigger on azure-ai-jobs. An exception abandons the message, so the host delivers it
    again and dead-letters it at the queue's max delivery count."""
    handle_step_message(process_runtime(), message.get_body().decode("utf-8"))
