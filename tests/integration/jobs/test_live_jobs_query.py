"""shared.jobs.ops.live_jobs_since on SQLite and PostgreSQL: live sessions recorded as jobs (options
`"live": true`, `"recovered": true` after a crash) are counted over a time window, other jobs are not."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import Settings
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.jobs import ops
from shared.jobs.store import create_job
from shared.runtime import Runtime


def add_job(runtime: Runtime, *, options: dict[str, Any] | None, seconds: float | None, age: timedelta) -> uuid.UUID:
    live = bool(options and options.get("live"))
    with runtime.sessions() as session, session.begin():
        job = create_job(
            session=session,
            audio_filename="live.wav" if live else "upload.wav",
            workflow_type="transcribe_only",
            source_language=None,
            target_language="en",
            callback_url=None,
            source_job_id=None,
            audio_blob_path=None,
            options=options,
        )
        job.status, job.audio_duration_seconds = "completed", seconds
        job.created_at = utcnow() - age
        if live:
            session.add(ProcessingStep(job_id=job.id, step_type="TRANSCRIBE", status="completed", worker_id="live-x"))
        return job.id


def test_live_jobs_in_the_window_are_counted_with_their_audio_and_recoveries(database_url: str, tmp_path: Path) -> None:
    runtime = Runtime(Settings(database_url=database_url, speechflow_home=tmp_path / "home"))
    try:
        hour = timedelta(hours=1)
        add_job(runtime, options={"live": True}, seconds=90.0, age=timedelta(minutes=5))
        add_job(runtime, options={"live": True, "speaker_labels": True}, seconds=30.0, age=timedelta(minutes=20))
        add_job(runtime, options={"live": True, "recovered": True}, seconds=60.0, age=timedelta(minutes=30))
        add_job(runtime, options={"live": True, "recovered": False}, seconds=None, age=timedelta(minutes=40))
        add_job(runtime, options={"live": True}, seconds=600.0, age=timedelta(hours=3))  # before the window
        add_job(runtime, options={"live": False}, seconds=45.0, age=timedelta(minutes=5))
        add_job(runtime, options={"speaker_labels": True}, seconds=45.0, age=timedelta(minutes=5))
        add_job(runtime, options={}, seconds=45.0, age=timedelta(minutes=5))
        add_job(runtime, options=None, seconds=45.0, age=timedelta(minutes=5))

        with runtime.sessions() as session:
            assert session.query(Job).count() == 9
            in_hour = ops.live_jobs_since(session=session, since=utcnow() - hour)
            in_day = ops.live_jobs_since(session=session, since=utcnow() - timedelta(days=1))
            nothing = ops.live_jobs_since(session=session, since=utcnow() + hour)

        assert in_hour == ops.LiveJobs(count=4, audio_seconds=pytest.approx(180.0), recovered=1)
        assert in_day == ops.LiveJobs(count=5, audio_seconds=pytest.approx(780.0), recovered=1)
        assert nothing == ops.LiveJobs(count=0, audio_seconds=0.0, recovered=0)
    finally:
        runtime.close()
