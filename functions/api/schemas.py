"""Request and response models of the public HTTP contract (DESIGN.md)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.results import Segment, SpeakerTalk
from shared.status import JobStatus, StepStatus
from shared.workflow import AUDIO_WORKFLOWS, NEEDS_SOURCE_LANGUAGE, WorkflowType

ResultFormat = Literal["json", "srt", "vtt", "txt"]
ResultPart = Literal["transcript", "translation"]

_LANGUAGE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$"
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")


def safe_filename(name: str) -> str:
    """The file's base name, reduced to characters that are safe in a blob path and a header."""
    base = re.split(r"[\\/]", name.strip())[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    return base[:200] or "upload"


class CreateJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio_filename: str | None = Field(default=None, min_length=1, max_length=255)
    """The file the client will upload: audio, or for translate_only / summarize_only a transcript
    (plain text or this service's transcript JSON). Optional when source_job_id is given."""
    workflow_type: WorkflowType
    source_language: str | None = Field(default=None, pattern=_LANGUAGE)
    target_language: str = Field(default="en", pattern=_LANGUAGE)
    callback_url: AnyHttpUrl | None = None
    source_job_id: uuid.UUID | None = None
    """translate_only / summarize_only: reuse the transcript of this job instead of an upload."""

    @field_validator("source_language", "target_language")
    @classmethod
    def _lowercase(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _per_workflow(self) -> CreateJobRequest:
        if self.workflow_type in NEEDS_SOURCE_LANGUAGE and not self.source_language:
            raise ValueError(f"{self.workflow_type} requires source_language")
        if self.workflow_type in AUDIO_WORKFLOWS:
            if self.source_job_id is not None:
                raise ValueError(f"{self.workflow_type} takes audio; source_job_id is only for translate/summarize")
            if not self.audio_filename:
                raise ValueError(f"{self.workflow_type} requires audio_filename")
        elif not self.audio_filename and self.source_job_id is None:
            raise ValueError(f"{self.workflow_type} requires an uploaded transcript (audio_filename) or source_job_id")
        elif self.audio_filename and self.source_job_id is not None:
            raise ValueError("give either audio_filename (an uploaded transcript) or source_job_id, not both")
        return self


class CreateJobResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    upload_url: str | None
    """PUT the file here with header `x-ms-blob-type: BlockBlob`. null when nothing is to be uploaded."""
    upload_expires_at: datetime | None


class JobStatusResponse(BaseModel):
    job_id: uuid.UUID
    status: JobStatus


class StepResponse(BaseModel):
    step_type: str
    status: StepStatus
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
    steps: list[StepResponse]
    webhooks: list[WebhookDeliveryResponse] = []
    """Callback deliveries to callback_url and their attempts."""
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class JobListResponse(BaseModel):
    items: list[JobResponse]
    total: int


class TranscriptPart(BaseModel):
    text: str
    segments: list[Segment]
    """Each with `start`/`end` in seconds — null for a transcript uploaded as text, which has no timings."""
    speakers: list[SpeakerTalk] | None = None


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


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
