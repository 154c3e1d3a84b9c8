"""`redact_pii_audio` through the API and a real database: the option's checks, REDACT_AUDIO run by its
real processor after a (stub) masked transcript, GET /jobs/{id}/redacted-audio's 409 → 200 (a WAV of the
upload's length, rate and channels, beeped or silenced where the mask is) → 410, and the WAV deleted
with the upload by the audio retention and by a purge."""

from __future__ import annotations

import io
import uuid
import wave
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from shared.jobs.retention import delete_audio
from shared.steps.runner import StepContext
from shared.steps.runner import processor_for as registry_processor
from tests.support.pipeline import Stack, build_stack, with_behaviours

RATE, SECONDS, CHANNELS = 22050, 4.0, 2


def noise_wav() -> tuple[bytes, np.ndarray]:
    samples = np.random.default_rng(3).integers(-6000, 6000, size=(int(RATE * SECONDS), CHANNELS)).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(CHANNELS)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue(), samples


def masked_transcript(_step: StepContext) -> dict[str, Any]:
    """TRANSCRIBE's result as stored for a redact_pii job: the phone number's words are one placeholder."""
    words = [
        {"start": 0.2, "end": 0.6, "word": " call"},
        {"start": 0.7, "end": 0.9, "word": " me"},
        {"start": 1.0, "end": 1.2, "word": " on"},
        {"start": 1.5, "end": 2.5, "word": " [PHONE]."},
        {"start": 3.0, "end": 3.5, "word": " Thanks."},
    ]
    segment = {"start": 0.2, "end": 3.5, "text": " call me on [PHONE]. Thanks.", "words": words}
    return {"language": "eng", "text": "call me on [PHONE]. Thanks.", "segments": [segment], "duration": SECONDS}


@pytest.fixture
def stack(database_url: str, make_settings: Callable[..., Any]) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    whisper = built.workers[1]
    routed = whisper.processor_for

    def processor_for(step_type: str) -> Callable[[StepContext], dict[str, Any]] | None:
        # The stub Whisper worker transcribes; REDACT_AUDIO, routed to the same queue, runs for real.
        return registry_processor(step_type) if step_type == "REDACT_AUDIO" else routed(step_type)

    whisper.processor_for = processor_for  # type: ignore[method-assign]
    yield built
    built.client.close()
    built.runtime.close()


def redacted_job(stack: Stack, **options: Any) -> tuple[uuid.UUID, np.ndarray]:
    upload, samples = noise_wav()
    with_behaviours(stack.workers[1], [masked_transcript])
    job_id = stack.submit("transcribe_only", source_language="eng", upload=upload, redact_pii_audio=True, **options)
    return job_id, samples


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data), "rb") as got:
        frames = np.frombuffer(got.readframes(got.getnframes()), dtype="<i2")
        return frames.reshape(-1, got.getnchannels()), got.getframerate()


def test_the_redacted_wav_beeps_the_masked_stretch_and_keeps_the_rest(stack: Stack) -> None:
    job_id, original = redacted_job(stack)
    early = stack.client.get(f"/jobs/{job_id}/redacted-audio")
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"

    stack.start(job_id)
    job = stack.drive(job_id) or {}

    assert job["status"] == "completed", job
    assert job["options"] == {"redact_pii": True, "redact_pii_audio": True}
    step = next(step for step in job["steps"] if step["step_type"] == "REDACT_AUDIO")
    assert step["status"] == "completed" and step["details"]["stretches"] == 1
    response = stack.client.get(f"/jobs/{job_id}/redacted-audio")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    samples, rate = read_wav(response.content)
    assert rate == RATE and samples.shape == original.shape
    # Padded from its timing (1.5–2.5 s), at most halfway into the kept words beside it.
    low, high = int(1.1 * RATE), int(2.75 * RATE)
    assert np.array_equal(samples[: low - 1], original[: low - 1])
    assert np.array_equal(samples[high + 1 :], original[high + 1 :])
    beep = samples[int(1.6 * RATE) : int(2.4 * RATE), 0].astype(float)
    peak = np.fft.rfftfreq(len(beep), 1 / RATE)[np.abs(np.fft.rfft(beep)).argmax()]
    assert peak == pytest.approx(1000, abs=5)
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert "[PHONE]" in results["transcript"]["text"]


def test_silence_and_deletion_with_the_upload_and_by_a_purge(stack: Stack) -> None:
    job_id, _original = redacted_job(stack, redact_pii_audio_method="silence")
    stack.start(job_id)
    assert (stack.drive(job_id) or {})["status"] == "completed"
    samples, _rate = read_wav(stack.client.get(f"/jobs/{job_id}/redacted-audio").content)
    assert not samples[int(1.5 * RATE) : int(2.5 * RATE)].any()
    assert samples[int(3.6 * RATE) :].any()

    path = f"{job_id}/redact_audio.wav"
    assert stack.runtime.blobs.exists(stack.settings.results_container, path)
    assert delete_audio(stack.runtime, job_id)
    assert not stack.runtime.blobs.exists(stack.settings.results_container, path)
    gone = stack.client.get(f"/jobs/{job_id}/redacted-audio")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "audio_deleted"

    other, _ = redacted_job(stack)
    stack.start(other)
    stack.drive(other)
    assert stack.runtime.blobs.exists(stack.settings.results_container, f"{other}/redact_audio.wav")
    assert stack.client.delete(f"/jobs/{other}").status_code == 200
    assert not stack.runtime.blobs.exists(stack.settings.results_container, f"{other}/redact_audio.wav")
    purged = stack.client.get(f"/jobs/{other}/redacted-audio")
    assert purged.status_code == 410 and purged.json()["error"]["code"] == "purged"


def test_a_job_that_did_not_ask_for_it_is_a_404(stack: Stack) -> None:
    job_id = stack.submit("transcribe_only", source_language="eng", redact_pii=True)

    response = stack.client.get(f"/jobs/{job_id}/redacted-audio")

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_requested"


@pytest.mark.parametrize(
    "body",
    [
        {"workflow_type": "transcribe_only", "source_language": "eng", "redact_pii_audio_method": "silence"},
        {"workflow_type": "transcribe_only", "source_language": "eng", "redact_pii_audio": True,
         "redact_pii_audio_method": "bleep"},
        {"workflow_type": "lid_only", "redact_pii_audio": True},
        {"workflow_type": "summarize_only", "source_language": "eng", "redact_pii_audio": True},
    ],
)  # fmt: skip
def test_bad_redaction_options_are_a_422(stack: Stack, body: dict[str, Any]) -> None:
    response = stack.client.post("/jobs", json={"audio_filename": "a.wav", **body})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
