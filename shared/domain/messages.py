"""The message envelopes that travel over the bus. Small JSON: ids, never audio or transcripts."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.workflow import EventKind

StepType = Annotated[str, Field(max_length=50, pattern=r"^[A-Z][A-Z0-9_]*(\.[1-9][0-9]*)?$")]
"""A step type (`TRANSCRIBE`), or a part of one (`TRANSCRIBE.3`). Whether it is registered is the
reader's question (the router finds no node for it; a consumer finds no processor and dead-letters it):
an envelope is read below the registry."""


class StepMessage(BaseModel):
    """Sent to a worker queue: run this step of this job."""

    model_config = ConfigDict(frozen=True)

    job_id: uuid.UUID
    step_id: uuid.UUID
    step_type: StepType
    attempt: int
    """The step's retry_count when it was dispatched."""
    parts: int | None = None
    """For a part of a fanned-out step (`TRANSCRIBE.3`) or its join: how many parts there are."""
    traceparent: str | None = None

    @property
    def message_id(self) -> str:
        return f"{self.job_id}:{self.step_type}:{self.attempt}"


class JobEvent(BaseModel):
    """Sent to job-events: something happened to a job; the router decides what comes next."""

    model_config = ConfigDict(frozen=True)

    job_id: uuid.UUID
    kind: EventKind
    step_type: StepType | None = None
    attempt: int = 0
    traceparent: str | None = None

    @property
    def message_id(self) -> str:
        return f"{self.job_id}:{self.kind}:{self.step_type or '-'}:{self.attempt}"


def result_blob_path(job_id: uuid.UUID | str, step_type: str, extension: str = "json") -> str:
    """Deterministic path of a step's result in the results container (docs/ARCHITECTURE.md, rule 3)."""
    return f"{job_id}/{step_type.lower()}.{extension}"
