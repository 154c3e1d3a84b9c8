"""The ops dashboard over a seeded database, one Streamlit AppTest per view."""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import struct
import threading
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from streamlit.testing.v1 import AppTest

from shared.core.config import Settings
from shared.core.db import migrate
from shared.domain.messages import result_blob_path
from shared.domain.models import Job, ProcessingStep, utcnow
from shared.domain.registry import step_types
from shared.jobs.store import create_job
from shared.runtime import Runtime

APP = str(Path(__file__).resolve().parents[3] / "dashboard" / "app.py")
TRANSCRIPT = "bonjour le monde, ceci est un test du tableau de bord"
OPERATOR_KEY = "operator-key-for-the-dashboard-tests-0123456789"


@dataclass(frozen=True)
class Seeded:
    completed: uuid.UUID
    failed: uuid.UUID
    queued: uuid.UUID


def tone_wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(seconds * rate)))
        out.writeframes(b"".join(struct.pack("<h", frame) for frame in frames))
    return buffer.getvalue()


def seed(settings: Settings) -> Seeded:
    """Three jobs (completed with a transcript and audio, failed after retries, queued) and messages on
    the queues, one of them dead-lettered."""
    migrate(settings)
    runtime = Runtime(settings)
    try:
        runtime.blobs.ensure_containers()
        now = utcnow()
        ids = Seeded(completed=uuid.uuid4(), failed=uuid.uuid4(), queued=uuid.uuid4())
        with runtime.sessions() as session, session.begin():
            for job_id, name, workflow in (
                (ids.completed, "meeting.wav", "full_pipeline"),
                (ids.failed, "broken.wav", "transcribe_only"),
                (ids.queued, "waiting.wav", "lid_only"),
            ):
                create_job(
                    session=session,
                    job_id=job_id,
                    audio_filename=name,
                    workflow_type=workflow,
                    source_language="fr" if workflow == "transcribe_only" else None,
                    target_language="en",
                    callback_url=None,
                    source_job_id=None,
                    audio_blob_path=f"{job_id}/{name}",
                )
            completed = session.get_one(Job, ids.completed)
            completed.status, completed.detected_language = "completed", "fr"
            completed.audio_duration_seconds, completed.completed_at = 12.5, now
            for offset, step_type in enumerate(("LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE")):
                session.add(
                    ProcessingStep(
                        job_id=ids.completed,
                        step_type=step_type,
                        status="completed",
                        attempt=1,
                        worker_id=f"{step_type.lower()}-worker",
                        started_at=now - timedelta(seconds=20 - 4 * offset),
                        completed_at=now - timedelta(seconds=17 - 4 * offset),
                        details={"audio_duration_seconds": 12.5, "model": "base"},
                    )
                )
            failed = session.get_one(Job, ids.failed)
            failed.status, failed.error_message, failed.completed_at = (
                "failed",
                "TRANSCRIBE: not an audio file",
                now,
            )
            session.add(
                ProcessingStep(
                    job_id=ids.failed,
                    step_type="TRANSCRIBE",
                    status="failed",
                    retry_count=2,
                    attempt=3,
                    started_at=now - timedelta(seconds=5),
                    error_message="PermanentError: not an audio file",
                )
            )
            session.get_one(Job, ids.queued).status = "queued"
        runtime.blobs.put(settings.audio_container, f"{ids.completed}/meeting.wav", tone_wav())
        runtime.blobs.put(
            settings.results_container,
            result_blob_path(ids.completed, "TRANSCRIBE"),
            json.dumps({"language": "fr", "text": TRANSCRIPT, "segments": []}).encode(),
        )
        bus = runtime.bus
        bus.send(settings.lid_queue, message_id="waiting-lid", body="{}")
        bus.send(settings.whisper_queue, message_id="poison", body="not json")
        bus.send(settings.whisper_queue, message_id="later", body="{}", delay=3600)
        poison = bus.receive(settings.whisper_queue, max_wait=1.0)
        assert poison is not None
        bus.dead_letter(poison, reason="InvalidMessage", description="seeded")
        return ids
    finally:
        runtime.close()


@pytest.fixture
def seeded(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Seeded:
    settings = make_settings()
    # The dashboard builds its own Settings from the environment, as `streamlit run` would.
    monkeypatch.setenv("SPEECHFLOW_HOME", str(settings.speechflow_home))
    monkeypatch.setenv("DASHBOARD_OPERATOR_KEY", OPERATOR_KEY)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SPEECHFLOW_API_KEY", raising=False)
    return seed(settings)


def sign_in(app: AppTest, key: str) -> AppTest:
    app.text_input(key="operator_key_input").input(key)
    app.button[0].click().run()
    return app


def run_view(view: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30)
    app.query_params["view"] = view
    app.run()
    sign_in(app, OPERATOR_KEY)
    assert not app.exception, [e.message for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    """Everything a person reads on the page: markdown, captions, metrics, tables, alerts."""
    parts: list[str] = []
    for element in (
        *app.markdown,
        *app.caption,
        *app.text,
        *app.error,
        *app.info,
        *app.warning,
        *app.subheader,
    ):
        parts.append(str(element.value))
    for metric in app.metric:
        parts.append(f"{metric.label}: {metric.value}")
    for frame in app.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(parts)


def test_overview_counts_jobs_by_status(seeded: Seeded) -> None:
    app = run_view("Overview")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Total jobs"] == "3"
    assert metrics["Active (queued + processing)"] == "1"
    assert metrics["Finished in window"] == "2"
    breakdown = app.dataframe[0].value
    assert breakdown.loc["🟢 completed", "jobs"] == 1
    assert breakdown.loc["🔴 failed", "jobs"] == 1
    assert breakdown.loc["🔵 queued", "jobs"] == 1
    assert breakdown.loc["🟡 processing", "jobs"] == 0


def test_queues_show_depth_and_dead_letters_over_time(seeded: Seeded) -> None:
    app = run_view("Queues")
    current = app.dataframe[0].value
    assert current.loc["lid-jobs", "active"] == 1
    assert current.loc["whisper-jobs", "scheduled"] == 1
    assert current.loc["whisper-jobs", "dead_letter"] == 1
    assert current.loc["job-events", "active"] == 0
    assert "Dead letters: whisper-jobs (1)" in texts(app)
    app.run()  # a refresh adds a sample per queue to the history
    assert len(app.session_state["queue_samples"]) == 2 * len(current)


def test_steps_show_throughput_and_latency_per_step_type(seeded: Seeded) -> None:
    app = run_view("Steps")
    frame = app.dataframe[0].value
    assert list(frame.index) == list(step_types())  # every registered step, in the workflows' order
    assert list(frame.index)[:3] == ["FETCH", "LID", "TRANSCRIBE"]
    assert frame.loc["LID", "completed"] == 1
    assert frame.loc["TRANSCRIBE", "failed"] == 1
    assert frame.loc["TRANSCRIBE", "retries"] == 2
    assert frame.loc["LID", "p50_s"] == pytest.approx(3.0)
    assert frame.loc["SUMMARIZE", "audio_s"] == pytest.approx(12.5)


def test_jobs_table_lists_recent_jobs_with_status_and_filters(seeded: Seeded) -> None:
    app = run_view("Jobs")
    table = app.dataframe[0].value
    assert set(table["job_id"]) == {str(seeded.completed), str(seeded.failed), str(seeded.queued)}
    statuses = dict(zip(table["job_id"], table["status"], strict=True))
    assert statuses[str(seeded.failed)] == "🔴 failed"
    assert statuses[str(seeded.completed)] == "🟢 completed"
    assert "TRANSCRIBE: not an audio file" in set(table["error"])

    app.sidebar.selectbox(key="status_filter").set_value("failed").run()
    assert list(app.dataframe[0].value["job_id"]) == [str(seeded.failed)]

    app.sidebar.selectbox(key="status_filter").set_value("all")
    app.sidebar.text_input(key="search").set_value("meeting").run()
    assert list(app.dataframe[0].value["job_id"]) == [str(seeded.completed)]

    app.sidebar.text_input(key="search").set_value("no-such-file").run()
    assert "No jobs match these filters." in texts(app)


def test_job_detail_shows_steps_transcript_and_audio(seeded: Seeded) -> None:
    app = AppTest.from_file(APP, default_timeout=30)
    app.query_params["view"] = "Job detail"
    app.query_params["job"] = str(seeded.completed)
    app.run()
    sign_in(app, OPERATOR_KEY)
    assert not app.exception, [e.message for e in app.exception]
    steps = app.dataframe[0].value
    assert list(steps["step"]) == ["LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"]
    assert set(steps["took"]) == {"3.0 s"}
    page = texts(app)
    assert TRANSCRIPT in page
    assert "Status: 🟢 completed" in page
    audio = app.get("audio")
    assert len(audio) == 1

    app.sidebar.text_input(key="job_id").set_value(str(seeded.failed)).run()
    page = texts(app)
    assert "TRANSCRIBE: not an audio file" in page
    failed = app.dataframe[0].value
    assert failed.loc[0, "retries"] == 2
    assert failed.loc[0, "error"] == "PermanentError: not an audio file"
    assert "No transcript yet." in page
    assert len(app.get("audio")) == 0

    app.sidebar.text_input(key="job_id").set_value(str(uuid.uuid4())).run()
    assert "not found" in texts(app)


def test_job_detail_shows_who_spoke_and_for_how_long(seeded: Seeded, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    runtime = Runtime(settings)
    try:
        words = [
            {"start": 0.0, "end": 0.5, "word": "hello"},
            {"start": 0.6, "end": 1.0, "word": "there"},
            {"start": 2.0, "end": 2.5, "word": "hi"},
            {"start": 2.6, "end": 3.5, "word": "back"},
        ]
        transcript = {"language": "eng", "text": "hello there hi back"}
        transcript["segments"] = [{"start": 0.0, "end": 3.5, "text": "hello there hi back", "words": words}]
        turns = [{"start": 0.0, "end": 1.2, "speaker": "S0"}, {"start": 1.8, "end": 3.6, "speaker": "S1"}]
        for step_type, result in (("TRANSCRIBE", transcript), ("DIARIZE", {"turns": turns, "speakers": ["S0", "S1"]})):
            runtime.blobs.put(
                settings.results_container, result_blob_path(seeded.completed, step_type), json.dumps(result).encode()
            )
        # Results are read only from completed steps (docs/ARCHITECTURE.md, rule 3): the DIARIZE step too.
        with runtime.sessions() as session, session.begin():
            session.add(ProcessingStep(job_id=seeded.completed, step_type="DIARIZE", status="completed", attempt=1))
    finally:
        runtime.close()
    app = AppTest.from_file(APP, default_timeout=30)
    app.query_params["view"] = "Job detail"
    app.query_params["job"] = str(seeded.completed)
    app.run()
    sign_in(app, OPERATOR_KEY)
    assert not app.exception, [e.message for e in app.exception]
    assert "Speakers" in texts(app)
    speakers = next(frame.value for frame in app.dataframe if "speaker" in frame.value.columns)
    assert list(speakers["speaker"]) == ["A", "B"]
    assert list(speakers["talk time (s)"]) == [1.0, 1.5]


def test_nothing_shows_until_the_operator_signs_in(seeded: Seeded) -> None:
    """Issue 20.9: the dashboard showed every key's jobs, transcripts and audio to anyone who reached it."""
    app = AppTest.from_file(APP, default_timeout=30)
    app.query_params["view"] = "Job detail"
    app.query_params["job"] = str(seeded.completed)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.metric and not app.dataframe and TRANSCRIPT not in texts(app)
    assert [field.label for field in app.text_input] == ["Operator key"]

    sign_in(app, "not-the-operator-key")
    assert "not the operator key" in texts(app) and TRANSCRIPT not in texts(app) and not app.dataframe

    sign_in(app, OPERATOR_KEY)
    assert TRANSCRIPT in texts(app), "signed in, the drill-down shows the transcript"


def test_without_any_operator_key_the_dashboard_says_what_to_set(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASHBOARD_OPERATOR_KEY")
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()
    assert "set DASHBOARD_OPERATOR_KEY" in texts(app) and not app.text_input and not app.metric


# --- live transcription (shared/jobs/live_ops.py): the live component's /ready and /metrics, live jobs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def live_metrics_text() -> str:
    """What a live component that heard 20 turns says on /metrics (shared/runtime/metrics.py's names and buckets)."""
    registry = CollectorRegistry()
    Gauge("speechflow_live_sessions", "open", registry=registry).set(3)
    latency = Histogram(
        "speechflow_live_turn_latency_seconds",
        "latency",
        buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, float("inf")),
        registry=registry,
    )
    for seconds in [0.4] * 10 + [0.6] * 9 + [2.5]:
        latency.observe(seconds)
    Counter("speechflow_live_audio_seconds", "audio", registry=registry).inc(95.0)
    Counter("speechflow_live_partials_skipped", "skipped", registry=registry).inc(7)
    return generate_latest(registry).decode()


@contextlib.contextmanager
def fake_live_component(port: int) -> Iterator[None]:
    """A tiny stand-in for gpu_worker/realtime's probes: GET /ready (JSON) and GET /metrics (Prometheus)."""
    metrics = live_metrics_text().encode()
    ready = json.dumps({"status": "ok", "sessions": 3, "max_sessions": 8}).encode()

    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = {"/ready": (ready, "application/json"), "/metrics": (metrics, "text/plain")}.get(
                self.path, (b"not found", "text/plain")
            )
            self.send_response(200 if body != b"not found" else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", port), Probes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def add_live_jobs(settings: Settings) -> None:
    """Two live sessions recorded as jobs in the window (one recovered after a crash), 2 min of audio."""
    runtime = Runtime(settings)
    try:
        with runtime.sessions() as session, session.begin():
            for seconds, options in ((90.0, {"live": True}), (30.0, {"live": True, "recovered": True})):
                job = create_job(
                    session=session,
                    audio_filename="live.wav",
                    workflow_type="transcribe_only",
                    source_language=None,
                    target_language="en",
                    callback_url=None,
                    source_job_id=None,
                    audio_blob_path=None,
                    options=options,
                )
                job.status, job.audio_duration_seconds, job.completed_at = "completed", seconds, utcnow()
    finally:
        runtime.close()


def test_overview_shows_a_live_component_that_is_not_running(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_HOST", "127.0.0.1")
    monkeypatch.setenv("REALTIME_PORT", str(free_port()))
    app = run_view("Overview")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert "Live transcription" in texts(app)
    assert metrics["Live sessions open / capacity"] == "not running"
    assert metrics["Turn latency p50"] == "–" and metrics["Turn latency p95"] == "–"
    assert metrics["Live jobs in window"] == "0"
    assert "The live component is not running" in texts(app)


def test_overview_shows_live_sessions_latency_and_live_jobs(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    add_live_jobs(make_settings())
    port = free_port()
    monkeypatch.setenv("REALTIME_HOST", "127.0.0.1")
    monkeypatch.setenv("REALTIME_PORT", str(port))
    with fake_live_component(port):
        app = run_view("Overview")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Live sessions open / capacity"] == "3 / 8"
    assert metrics["Turn latency p50"] == "0.50 s"  # rank 10 of 20: the last turn of (0.25, 0.5]
    assert metrics["Turn latency p95"] == "0.75 s"  # rank 19: the last of (0.5, 0.75]
    assert metrics["Live audio received"] == "95.0 s"
    assert metrics["Partials skipped"] == "7"
    assert metrics["Live jobs in window"] == "2"
    assert metrics["Live audio in window"] == "2.0 min"
    assert metrics["Recovered after a crash"] == "1"
    assert metrics["Total jobs"] == "5"
    assert "latency over 20 turns" in texts(app)
