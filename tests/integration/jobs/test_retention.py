"""Retention (shared/jobs/retention.py): audio deleted AUDIO_RETENTION_SECONDS after a job ends, the whole job
purged RESULT_RETENTION_SECONDS after (or its own shorter `retention_seconds`), applied by the
retention pass that the local `retention` component runs every PURGE_INTERVAL_SECONDS; what is due
shows on the dashboard."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from shared.core.config import Settings
from shared.core.db import migrate
from shared.domain.models import utcnow
from shared.hosting.host import RUNNERS, components
from shared.jobs.ops import retention_status
from shared.jobs.retention import apply_retention, retention_loop, run_retention
from tests.integration.dashboard.test_dashboard import OPERATOR_KEY, run_view, seed
from tests.support.pipeline import Stack, build_stack

DAY = timedelta(days=1)


@pytest.fixture
def stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url, lock_duration_seconds=5))
    yield built
    built.client.close()
    built.runtime.close()


def audio_exists(stack: Stack, job_id: uuid.UUID) -> bool:
    """The upload (`{job_id}/clip.wav`), or once the job started its copy (`{job_id}/input/clip.wav`)."""
    folder = stack.settings.blob_root / stack.settings.audio_container / str(job_id)
    return (folder / "clip.wav").exists() or (folder / "input" / "clip.wav").exists()


def finished(stack: Stack, **fields: Any) -> uuid.UUID:
    job_id = stack.submit("transcribe_only", source_language="fra", **fields)
    stack.start(job_id)
    assert stack.drive(job_id)["status"] == "completed"  # type: ignore[index]
    return job_id


def test_audio_goes_after_a_day_and_the_whole_job_after_thirty(stack: Stack) -> None:
    job_id = finished(stack)
    assert apply_retention(stack.runtime) == apply_retention(stack.runtime, now=utcnow() + timedelta(hours=23))
    assert audio_exists(stack, job_id), "nothing is due within the day"

    after_a_day = apply_retention(stack.runtime, now=utcnow() + DAY + timedelta(minutes=1))
    assert after_a_day.audio_deleted == 1 and after_a_day.purged == 0
    assert not audio_exists(stack, job_id)
    job = stack.job(job_id)
    assert job["audio_deleted_at"] and job["purged_at"] is None
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 200, "results outlive the audio"
    assert apply_retention(stack.runtime, now=utcnow() + 2 * DAY).audio_deleted == 0, "deleted once"

    after_a_month = apply_retention(stack.runtime, now=utcnow() + 30 * DAY + timedelta(minutes=1))
    assert after_a_month.purge_requested == 1 and after_a_month.purged == 1
    assert stack.job(job_id)["purged_at"]
    assert stack.client.get(f"/jobs/{job_id}/results").status_code == 410


def test_a_jobs_own_retention_shortens_both(stack: Stack) -> None:
    short = finished(stack, retention_seconds=120)
    default = finished(stack)
    done = apply_retention(stack.runtime, now=utcnow() + timedelta(minutes=3))
    assert done.purged == 1 and done.audio_deleted == 0, "a purge deletes the audio with the rest"
    assert stack.job(short)["purged_at"] and stack.job(short)["audio_deleted_at"]
    assert stack.job(default)["purged_at"] is None and audio_exists(stack, default)


def test_a_never_started_upload_is_deleted_too(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    assert apply_retention(stack.runtime, now=utcnow() + DAY + timedelta(minutes=1)).audio_deleted == 1
    assert not audio_exists(stack, job_id)
    assert stack.client.post(f"/jobs/{job_id}/start").status_code == 409, "nothing left to start"


def test_a_running_job_is_never_due(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="fra")
    stack.start(job_id)
    done = apply_retention(stack.runtime, now=utcnow() + 60 * DAY)
    assert done == type(done)(), "a queued job's data is not touched"
    assert audio_exists(stack, job_id)


@pytest.mark.parametrize(("retention", "status"), [(30 * 86400, 201), (30 * 86400 + 1, 422), (59, 422)])
def test_retention_seconds_is_at_most_the_servers(stack: Stack, retention: int, status: int) -> None:
    response = stack.client.post(
        "/jobs", json={"workflow_type": "lid_only", "audio_filename": "a.wav", "retention_seconds": retention}
    )
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["error"]["code"] == "validation_error"


def test_the_loop_applies_retention_until_stopped(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(purge_interval_seconds=0.05, audio_retention_seconds=0)
    migrate(settings)
    stack = build_stack(settings)
    try:
        job_id = finished(stack)
        stopping = threading.Event()
        loop = threading.Thread(target=retention_loop, args=(stack.runtime, stopping))
        loop.start()
        try:
            for _ in range(200):
                if stack.job(job_id)["audio_deleted_at"]:
                    break
                threading.Event().wait(0.05)
        finally:
            stopping.set()
            loop.join(timeout=10)
        assert not loop.is_alive(), "the loop stops when asked"
        assert stack.job(job_id)["audio_deleted_at"] and not audio_exists(stack, job_id)
    finally:
        stack.client.close()
        stack.runtime.close()


def test_the_local_host_runs_the_retention_component() -> None:
    assert "retention" in components(Settings())
    assert RUNNERS["retention"] is run_retention


def test_the_dashboard_shows_what_is_due(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(audio_retention_seconds=0)
    monkeypatch.setenv("SPEECHFLOW_HOME", str(settings.speechflow_home))
    monkeypatch.setenv("AUDIO_RETENTION_SECONDS", "0")
    monkeypatch.setenv("COST_PER_CPU_SECOND", "0.5")
    monkeypatch.setenv("COST_CURRENCY", "EUR")
    monkeypatch.setenv("DASHBOARD_OPERATOR_KEY", OPERATOR_KEY)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    seed(settings)
    runtime = build_stack(settings).runtime
    with runtime.sessions() as session:
        status = retention_status(session=session, settings=settings)
    assert (status.audio_due, status.purge_due, status.purged) == (2, 0, 0), "the two ended jobs' uploads"
    app = run_view("Overview")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Audio due for deletion"] == "2"
    assert metrics["Jobs due for purge"] == "0"
    assert metrics["Jobs purged"] == "0"
    assert metrics["Audio"] == "12.5 s"
    assert metrics["Estimated cost"].endswith("EUR")
    apply_retention(runtime)
    app = run_view("Overview")
    assert {metric.label: metric.value for metric in app.metric}["Audio deleted"] == "2"
    runtime.close()
