"""What steps read: earlier results of this job (or of the job named by source_job_id), typed, and the
uploaded input (audio, or a transcript as text or JSON)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from shared.core.errors import BlobNotFound, PermanentError
from shared.domain.messages import result_blob_path
from shared.domain.results import Diarization, ResultModel, Segment, Transcript
from shared.domain.speaker_join import with_speakers
from shared.engines.text.text_chunks import split_sentences

if TYPE_CHECKING:
    from shared.steps.context import StepContext

R = TypeVar("R", bound=ResultModel)


def read_result(step: StepContext, step_type: str, model: type[R], *, job_id: uuid.UUID | None = None) -> R:
    """The result of an earlier step of this job (or of another job). BlobNotFound when there is none;
    PermanentError when what is stored is not a result of that kind."""
    path = result_blob_path(job_id or step.job.id, step_type)
    data = step.runtime.blobs.get(step.settings.results_container, path)
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise PermanentError(f"the stored {step_type} result is not valid: {error.errors()[:1]}") from error


@dataclass(frozen=True)
class TranscriptInput:
    transcript: Transcript
    audio_job_id: uuid.UUID | None
    """A job whose uploaded audio this transcript was made from, if any."""


def load_transcript(step: StepContext) -> TranscriptInput:
    """This job's transcript: from the job named by source_job_id, the uploaded file (translate_only,
    summarize_only), or this job's TRANSCRIBE result."""
    job = step.job
    if job.source_job_id is not None:
        try:
            transcript = read_result(step, "TRANSCRIBE", Transcript, job_id=job.source_job_id)
        except BlobNotFound as error:
            raise PermanentError(f"source job {job.source_job_id} has no transcript") from error
        transcript = with_speakers(transcript, _diarization(step, job.source_job_id))
        return TranscriptInput(_with_language(transcript, job.language), audio_job_id=job.source_job_id)
    if job.workflow_type in ("translate_only", "summarize_only"):
        with step.input_file() as path:
            return TranscriptInput(parse_uploaded_transcript(path.read_bytes(), language=job.language), None)
    try:
        transcript = read_result(step, "TRANSCRIBE", Transcript)
    except BlobNotFound as error:
        raise PermanentError("the job has no transcript") from error
    transcript = with_speakers(transcript, _diarization(step, job.id))
    return TranscriptInput(_with_language(transcript, job.language), audio_job_id=job.id)


def _diarization(step: StepContext, job_id: uuid.UUID) -> Diarization | None:
    """The job's DIARIZE result, if it has one (none asked for, or it failed: no speakers)."""
    try:
        return read_result(step, "DIARIZE", Diarization, job_id=job_id)
    except (BlobNotFound, PermanentError):
        return None


def parse_uploaded_transcript(content: bytes, *, language: str | None) -> Transcript:
    """This service's transcript JSON, or plain UTF-8 text (split into untimed sentences)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PermanentError("the uploaded transcript is neither UTF-8 text nor transcript JSON") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("segments") or data.get("text"), (list, str)):
        try:
            transcript = Transcript.model_validate(data)
        except ValidationError as error:
            raise PermanentError(f"the uploaded transcript JSON is not valid: {error.errors()[:1]}") from error
        transcript = _with_language(transcript, language)
        if not transcript.segments and transcript.text.strip():
            transcript.segments = _sentences(transcript.text)
        return transcript
    if not text.strip():
        raise PermanentError("the uploaded transcript is empty")
    return Transcript(language=language, text=text.strip(), segments=_sentences(text))


def _sentences(text: str) -> list[Segment]:
    return [Segment(text=sentence) for sentence in split_sentences(text)]


def _with_language(transcript: Transcript, fallback: str | None) -> Transcript:
    if not transcript.language and fallback:
        return transcript.model_copy(update={"language": fallback})
    return transcript
