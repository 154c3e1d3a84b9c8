"""The status vocabulary of jobs and steps, in one place (see docs/ARCHITECTURE.md, "Job lifecycle")."""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal["pending_upload", "queued", "processing", "completed", "partial_complete", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)

StepStatus = Literal["pending", "processing", "completed", "failed"]
STEP_STATUSES: tuple[str, ...] = get_args(StepStatus)

ACTIVE_JOB_STATUSES = frozenset({"queued", "processing"})
"""A job whose steps may be dispatched and claimed."""
CANCELLABLE_STATUSES = frozenset({"pending_upload", "queued", "processing"})
TERMINAL_STATUSES = frozenset({"completed", "partial_complete", "failed", "cancelled"})
"""A job that has ended: nothing more runs for it, and its webhook has been staged."""
