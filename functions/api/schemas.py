"""Request and response models of the public HTTP contract (the README and /openapi.json describe it)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.domain.languages import WHISPER_TO_ISO639_3, UnsupportedLanguage, to_whisper
from shared.domain.models import WebhookDelivery
from shared.domain.options import AUDIO_ONLY_OPTIONS, LANGUAGE_CODE, ClientOptions, JobOptions, NoNul
from shared.domain.results import LanguageTalk, Segment, SpeakerTalk
from shared.domain.status import JobStatus, StepStatus
from shared.domain.workflow import AUDIO_WORKFLOWS, NEEDS_SOURCE_LANGUAGE, WorkflowType

LANGUAGE_IDENTIFYING = frozenset({"full_pipeline", "lid_only"})
"""The workflows with a LID step, which `languages` narrows."""

ResultFormat = Literal["json", "srt", "vtt", "txt"]
ResultPart = Literal["transcript", "translation"]

_LANGUAGE = LANGUAGE_CODE
SUPPORTED_LANGUAGES = ", ".join(sorted(WHISPER_TO_ISO639_3))
"""The languages a job may name (Whisper's), as an error message lists them."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")


def safe_filename(name: str) -> str:
    """The file's base name, reduced to characters that are safe in a blob path and a header."""
    base = re.split(r"[\\/]", name.strip())[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    return base[:200] or "upload"


class JobRequestFields(ClientOptions):
    """What POST /jobs and POST /batches both take: the workflow, its languages, the callback and the
    options a client sets (ClientOptions, declared once in shared/domain/options.py)."""

    model_config = ConfigDict(extra="forbid")

    workflow_type: WorkflowType
    source_language: str | None = Field(default=None, pattern=_LANGUAGE)
    target_language: str = Field(default="en", pattern=_LANGUAGE)
    callback_url: AnyHttpUrl | None = None

    @field_validator("source_language", "target_language")
    @classmethod
    def _supported_language(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Refused here rather than by the step that would need it: an unknown source language failed the
        # job later, an unknown target ended it partial_complete with a misleading error.
        if not value:
            return value
        try:
            to_whisper(value)
        except UnsupportedLanguage:
            raise ValueError(
                f"{info.field_name} {value!r} is not a language SpeechFlow supports; give one of"
                f" {SUPPORTED_LANGUAGES} (ISO 639-1), or its ISO 639-3 code"
            ) from None
        return value.lower()


class CreateJobRequest(JobRequestFields):
    """POST /jobs: the job's input and workflow, and the options a client sets."""

    audio_filename: Annotated[str, StringConstraints(min_length=1, max_length=255), NoNul] | None = None
    """The file the client will upload: audio, or for translate_only / summarize_only a transcript
    (plain text or this service's transcript JSON). Optional when source_job_id is given."""
    source_job_id: uuid.UUID | None = None
    """translate_only / summarize_only: reuse the transcript of this job instead of an upload."""

    @model_validator(mode="after")
    def _per_workflow(self) -> CreateJobRequest:
        # code_switching finds each stretch's language: transcribe_only needs none given then.
        if self.workflow_type in NEEDS_SOURCE_LANGUAGE and not self.source_language and not self.code_switching:
            raise ValueError(f"{self.workflow_type} requires source_language")
        if self.workflow_type in AUDIO_WORKFLOWS:
            if self.source_job_id is not None:
                raise ValueError(f"{self.workflow_type} takes audio; source_job_id is only for translate/summarize")
            if not self.audio_filename and not self.audio_url:
                raise ValueError(f"{self.workflow_type} requires audio_filename (to upload) or audio_url")
        elif not self.audio_filename and self.source_job_id is None:
            raise ValueError(f"{self.workflow_type} requires an uploaded transcript (audio_filename) or source_job_id")
        elif self.audio_filename and self.source_job_id is not None:
            raise ValueError("give either audio_filename (an uploaded transcript) or source_job_id, not both")
        if self.languages and self.workflow_type in AUDIO_WORKFLOWS:
            if self.source_language:
                raise ValueError("give source_language (the language) or languages (the possible ones), not both")
            if self.workflow_type not in LANGUAGE_IDENTIFYING and not self.code_switching:
                raise ValueError(f"languages narrows language identification, which {self.workflow_type} does not run")
        if self.code_switching and self.workflow_type in AUDIO_WORKFLOWS:
            if self.source_language:
                raise ValueError("code_switching identifies the language of each stretch: give no source_language")
            if self.workflow_type == "lid_only":
                raise ValueError("code_switching needs a transcript: full_pipeline or transcribe_only, not lid_only")
        if "redact_pii_audio_method" in self.model_fields_set and not self.redact_pii_audio:
            raise ValueError("redact_pii_audio_method applies only with redact_pii_audio: true")
        if self.redact_pii_audio and self.workflow_type == "lid_only":
            raise ValueError("redact_pii_audio needs a transcript: full_pipeline or transcribe_only, not lid_only")
        if self.known_speakers and (self.channels == "split" or self.workflow_type == "lid_only"):
            raise ValueError("known_speakers names diarized speakers: channels=mix, full_pipeline or transcribe_only")
        if self.workflow_type not in AUDIO_WORKFLOWS:
            given = [name for name in AUDIO_ONLY_OPTIONS if name in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to audio workflows, not {self.workflow_type}")
        return self

    def options(self) -> JobOptions:
        return JobOptions.model_validate(self.model_dump(include=set(ClientOptions.model_fields)))


class CreateJobResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    upload_url: str | None
    """PUT the file here with header `x-ms-blob-type: BlockBlob`. null when nothing is to be uploaded."""
    upload_expires_at: datetime | None


class JobStatusResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus


class DeleteJobResponse(JobStatusResponse):
    """DELETE /jobs/{id}: the job's status, and where a purge was asked for, how far it has got."""

    purge_requested_at: datetime | None = None
    purged_at: datetime | None = None
    """Set once the audio, results and transcript text are deleted; null while the purge waits for a
    cancelled job's running step to stop."""


class StepUsageResponse(BaseModel):
    step_type: str
    device: Literal["cpu", "gpu", "remote"]
    """Where the step ran: `remote` is a text model endpoint, paid by the token."""
    compute_seconds: float
    input_tokens: int
    output_tokens: int


class LlmTokens(BaseModel):
    input: int
    output: int


class EstimatedCost(BaseModel):
    amount: float
    currency: str


class UsageResponse(BaseModel):
    """What a job used, from its steps' records, and its cost at the server's configured rates."""

    audio_seconds: float
    compute_seconds: float
    steps: list[StepUsageResponse]
    llm_tokens: LlmTokens
    estimated_cost: EstimatedCost


class UsageSummaryResponse(UsageResponse):
    """GET /usage: the calling key's jobs created in [from, to), summed per step type and device."""

    from_: datetime = Field(serialization_alias="from")
    to: datetime
    jobs: int


class StepResponse(BaseModel):
    step_type: str
    """`TRANSCRIBE`, or a part of a step fanned out over chunks or channels (`TRANSCRIBE.3`)."""
    status: StepStatus
    worker_id: str | None = None
    """The worker that holds (or last held) the step."""
    retry_count: int
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    progress: float | None = None
    details: dict[str, Any] | None = None


class WebhookDeliveryResponse(BaseModel):
    webhook_id: uuid.UUID
    """The `webhook-id` header of every attempt of this delivery."""
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryResponse:
        """A delivery row as the API shows it, a job's or a batch's alike."""
        return cls(
            webhook_id=delivery.id,
            event_type=delivery.event_type,
            status=delivery.status,  # type: ignore[arg-type]
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
            delivered_at=delivery.delivered_at,
        )


class JobResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    workflow_type: WorkflowType
    audio_filename: str
    source_language: str | None
    detected_language: str | None
    language_confidence: float | None = None
    target_language: str | None
    source_job_id: uuid.UUID | None = None
    error_message: str | None = None
    options: dict[str, Any] = {}
    """The options the job was created with (speaker_labels, prompt, hotwords, …), defaults left out;
    audio_url without its query (a SAS is a secret)."""
    steps: list[StepResponse]
    webhooks: list[WebhookDeliveryResponse] = []
    """Callback deliveries to callback_url and their attempts."""
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    usage: UsageResponse | None = None
    """Audio and compute seconds, text model tokens and the estimated cost (shared/domain/usage.py)."""
    audio_deleted_at: datetime | None = None
    """When the uploaded audio was deleted (AUDIO_RETENTION_SECONDS after the job ended, or a purge)."""
    purge_requested_at: datetime | None = None
    purged_at: datetime | None = None
    """Set once the job's audio, results and text are deleted; the job stays as this tombstone."""
    batch_id: uuid.UUID | None = None
    """The batch the job is an item of (POST /batches), if any."""


class JobListResponse(BaseModel):
    items: list[JobResponse]
    total: int


class TranscriptPart(BaseModel):
    text: str
    segments: list[Segment]
    """Each with `start`/`end` in seconds — null for a transcript uploaded as text, which has no timings."""
    speakers: list[SpeakerTalk] | None = None
    languages: list[LanguageTalk] | None = None
    """With code_switching: each language heard (ISO 639-3) and its talk time, the most spoken first; each
    segment then carries its own `language`."""


class SummaryPart(BaseModel):
    summary: str
    key_points: list[str]


class ResultsResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    language: str | None
    transcript: TranscriptPart | None
    translation: TranscriptPart | None
    summary: SummaryPart | None


class SpeakerResponse(BaseModel):
    """An enrolled voice of the voice library; its voiceprint is never shown."""

    speaker_id: uuid.UUID
    name: str
    status: Literal["pending", "ready", "failed"]
    """pending while the diarize worker enrolls the clip (poll GET /speakers/{id}); ready to use in
    known_speakers; failed: `error_message` says why (enroll again)."""
    audio_seconds: float | None = None
    """Seconds of speech the clip held."""
    error_message: str | None = None
    created_at: datetime


class SpeakerListResponse(BaseModel):
    items: list[SpeakerResponse]
    total: int


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
