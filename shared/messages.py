"""The message envelopes that travel over the bus. Small JSON: ids, never audio or transcripts."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.workflow import EventKind


def _registered(step_type: str) -> str:
    from shared.pipeline import known

    if not known(step_type):
        raise ValueError(f"unknown step type {step_type!r}")
    return step_type


StepType = Annotated[str, Field(max_length=50), AfterValidator(_registered)]
"""A step type of the registry (shared/pipeline), or a part of one (`TRANSCRIBE.3`)."""


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
