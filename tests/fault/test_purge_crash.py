"""Fault injection for the purge (shared/jobs/retention.py): a purger SIGKILLed between two blob deletes leaves
its recorded intent, and the next retention pass — a restart — finishes the purge. SQLite and
PostgreSQL, the local blob folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.config import Settings
from shared.domain.messages import result_blob_path
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.jobs.retention import apply_retention
from shared.jobs.store import create_job
from shared.runtime import Runtime
from tests.conftest import REPO

pytestmark = [pytest.mark.slow]

PHRASE = "wombat harpsichord lighthouse"


def finished_job(runtime: Runtime) -> uuid.UUID:
    """A completed job with its upload and a result blob per format, each holding PHRASE."""
    settings = runtime.settings
    job_id = uuid.uuid4()
    now = utcnow()
    with runtime.sessions() as session, session.begin():
        create_job(
            session=session,
            job_id=job_id,
            audio_filename="call.wav",
            workflow_type="transcribe_only",
            source_language="eng",
            target_language="en",
            callback_url=None,
            source_job_id=None,
            audio_blob_path=f"{job_id}/call.wav",
        )
        job = session.get_one(Job, job_id)
        job.status, job.completed_at = "completed", now
        session.add(
            ProcessingStep(
                job_id=job_id,
                step_type="TRANSCRIBE",
                status="completed",
                started_at=now,
                completed_at=now,
                result_blob_path=result_blob_path(job_id, "TRANSCRIBE"),
                details={"processing_seconds": 1.0, "device": "cpu"},
            )
        )
    runtime.blobs.put(settings.audio_container, f"{job_id}/call.wav", PHRASE.encode())
    for extension in ("json", "srt", "vtt", "txt"):
        body = json.dumps({"text": PHRASE}) if extension == "json" else PHRASE
        runtime.blobs.put(settings.results_container, result_blob_path(job_id, "TRANSCRIBE", extension), body.encode())
    return job_id


def blobs_holding(settings: Settings, phrase: str) -> list[Path]:
    return [path for path in settings.blob_root.rglob("*") if path.is_file() and phrase.encode() in path.read_bytes()]


def test_a_purger_killed_between_blob_deletes_finishes_after_restart(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=database_url)
    runtime = Runtime(settings)
    runtime.blobs.ensure_containers()
    job_id = finished_job(runtime)
    assert len(blobs_holding(settings, PHRASE)) == 5

    marker = tmp_path / "deleted-one"
    env = {**os.environ, "SPEECHFLOW_HOME": str(settings.speechflow_home), "DATABASE_URL": database_url}
    purger = subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_purge", str(job_id), str(marker)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert purger.poll() is None, "the purger died before its first delete"
            assert time.monotonic() < deadline, "the purger never deleted a blob"
            time.sleep(0.05)
        purger.send_signal(signal.SIGKILL)
        assert purger.wait(timeout=10) == -signal.SIGKILL
    finally:
        if purger.poll() is None:
            purger.kill()

    with runtime.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.purge_requested_at is not None and job.purged_at is None, "the intent survived the kill"
    left = blobs_holding(settings, PHRASE)
    assert 0 < len(left) < 5, "killed half-way: some blobs deleted, some not"

    done = apply_retention(runtime)  # the restarted retention component's first pass
    assert done.purged == 1 and done.failed == 0
    assert blobs_holding(settings, PHRASE) == []
    assert not (settings.blob_root / settings.results_container / str(job_id)).exists()
    with runtime.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.purged_at is not None and job.audio_blob_path is None
        (step,) = job.steps
        assert step.status == "completed" and step.details == {"processing_seconds": 1.0, "device": "cpu"}
    assert apply_retention(runtime).purged == 0, "finished once"
    runtime.close()
