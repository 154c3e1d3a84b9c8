"""What a step's processor works with: the job it works for, its inputs, a place for its outputs,
progress, and whether to stop (cancelled, shutting down, or taken over)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from shared.core.errors import LeaseLost, PermanentError
from shared.domain.messages import result_blob_path
from shared.jobs.store import JobSnapshot
from shared.runtime import Runtime
from shared.steps.claims import Claim, job_is_cancelled, renew_lease


@dataclass
class StepContext:
    """What a step's processor gets: the job, its inputs and a place for its outputs."""

    runtime: Runtime
    claim: Claim
    details: dict[str, Any] = field(default_factory=dict)
    """Recorded on the step: model, device, durations, usage, …"""
    job_updates: dict[str, Any] = field(default_factory=dict)
    """Columns of the job to set when the step completes (detected_language, …)."""
    shutdown_requested: Callable[[], bool] = field(default=lambda: False, repr=False)
    """True once the worker's shutdown grace period is over: stop at the next boundary and raise
    ShutdownRequested, and the step is handed back for another worker."""
    settle_in: Callable[[Session], object] | None = field(default=None, repr=False)
    """Settles the step's message in the transaction that finishes the step (see MessageBus.complete_in)."""
    lease_lost: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once a renewal finds the claim no longer ours: another worker has taken the step over."""
    _last_progress_write: float = field(default=0.0, repr=False)
    _last_cancel_check: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def job(self) -> JobSnapshot:
        return self.claim.job

    @property
    def step_type(self) -> str:
        return self.claim.step_type

    @property
    def parts(self) -> int:
        """How many parts this step's fan-out has (1: not fanned out), as the router dispatched it."""
        return self.claim.parts or 1

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @contextmanager
    def input_file(self) -> Iterator[Path]:
        """The job's uploaded input (audio, or a transcript), streamed to a temporary file."""
        blob = self.job.audio_blob_path
        if not blob:
            raise PermanentError("the job has no uploaded input")
        suffix = Path(self.job.audio_filename).suffix[:16]
        with tempfile.TemporaryDirectory(prefix="speechflow-") as folder:
            path = Path(folder) / f"input{suffix}"
            self.runtime.blobs.download_to(self.settings.audio_container, blob, path)
            yield path

    def put_result_file(self, extension: str, data: bytes | str, *, content_type: str) -> str:
        """Write results/{job_id}/{step}.{extension}; returns the blob path. Refused once the step
        has been taken over: its new holder writes these paths now."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"{self.step_type} of job {self.job.id} was taken over by another worker")
        path = result_blob_path(self.job.id, self.step_type, extension)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self.runtime.blobs.put(self.settings.results_container, path, payload, content_type=content_type)
        return path

    def report_progress(self, fraction: float) -> None:
        """Record progress (0..1); written at most once a second."""
        now = time.monotonic()
        if now - self._last_progress_write < 1.0 and fraction < 1.0:
            return
        self._last_progress_write = now
        if not renew_lease(self.runtime, self.claim, progress=fraction):
            self.lease_lost.set()

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_requested()

    def should_stop(self) -> bool:
        """True once the job has been cancelled (checked at most every 2 s), the worker's shutdown
        grace period is over, or another worker has taken the step over; processors ask it between
        segments or chunks."""
        if self.shutdown_requested() or self.lease_lost.is_set():
            return True
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 2.0:
            self._last_cancel_check = now
            self._cancelled = job_is_cancelled(self.runtime, self.job.id)
        return self._cancelled
