"""Live transcription through the running stack, with OpenAI's own SDK as the client (`client.realtime.connect`)
and a plain WebSocket client for what browsers do: at the API's address (passed on to the live component),
deltas that add up to each turn's transcript, manual commits, clears, bad events, refused credentials,
client secrets, a client gone mid-turn, the per-key limit, and every session recorded as a job that goes
on through its workflow."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import RunningStack, free_port
from tests.support.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.model]

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "en"
SPEED = 3.0
"""How much faster than real time the tests stream (the live worker keeps up on 2 cores)."""
CHUNK_MS = 100


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {
        "REALTIME_PORT": str(free_port()),
        "REALTIME_MAX_SESSIONS_PER_KEY": "2",
        "WHISPER_WORKERS": "1",
        "LLM_BACKEND": "offline",
    }
    with start_stack(components=("api", "router", "whisper", "azure-ai", "realtime"), env=env) as running:
        _wait_live(running)
        yield running


def _wait_live(stack: RunningStack) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with connect(ws_url(stack), additional_headers=auth(stack), open_timeout=5) as socket:
                assert json.loads(socket.recv(timeout=10))["type"] == "session.created"
                return
        except (InvalidStatus, OSError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"the live component did not answer within 120 s\n{stack.log_tail()}")


def ws_url(stack: RunningStack, query: str = "intent=transcription") -> str:
    return stack.base_url.replace("http://", "ws://") + "/v1/realtime?" + query


def auth(stack: RunningStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['SPEECHFLOW_API_KEY']}"}


def sdk(stack: RunningStack, key: str | None = None) -> OpenAI:
    return OpenAI(api_key=key or stack.env["SPEECHFLOW_API_KEY"], base_url=stack.base_url + "/v1", max_retries=0)


def pcm24k(*names: str, gap_seconds: float = 1.5) -> tuple[bytes, str]:
    """The clips one after another with pauses, as 24 kHz PCM16; and their reference text."""
    import av

    from shared.engines.audio import decode

    pieces: list[np.ndarray] = [np.zeros(8000, np.float32)]
    for name in names:
        pieces += [decode(AUDIO / f"{name}.wav"), np.zeros(int(16000 * gap_seconds), np.float32)]
    audio = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype(np.int16)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    out = [*resampler.resample(frame), *resampler.resample(None)]
    text = " ".join((AUDIO / f"{name}.txt").read_text().strip() for name in names)
    return b"".join(piece.to_ndarray().tobytes() for piece in out), text


def appends(pcm: bytes) -> Iterator[str]:
    size = 24000 * 2 * CHUNK_MS // 1000
    for at in range(0, len(pcm), size):
        yield base64.b64encode(pcm[at : at + size]).decode()


def collect(connection: Any, *, turns: int, timeout: float = 90) -> list[Any]:
    """Events until `turns` turns have completed (or failed)."""
    events: list[Any] = []
    done = 0
    deadline = time.monotonic() + timeout
    for event in connection:
        events.append(event)
        if event.type.startswith("conversation.item.input_audio_transcription.") and not event.type.endswith(".delta"):
            done += 1
            if done == turns:
                break
        assert time.monotonic() < deadline, [e.type for e in events]
    return events


def wait_job(stack: RunningStack, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return dict(stack.wait([job_id], timeout=timeout, poll=0.5)[job_id])


def test_an_sdk_session_sends_deltas_that_add_up_and_is_recorded_as_a_job(stack: RunningStack) -> None:
    import threading

    pcm, reference = pcm24k("librivox-0870", "librivox-0880")
    with sdk(stack).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = connection.recv()
        assert created.type == "session.created"
        job_id = created.session.id  # type: ignore[union-attr]
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )

        def send() -> None:
            for chunk in appends(pcm):
                connection.input_audio_buffer.append(audio=chunk)
                time.sleep(CHUNK_MS / 1000 / SPEED)

        sender = threading.Thread(target=send)
        sender.start()
        events = collect(connection, turns=2)
        sender.join()

    assert events[0].type == "session.updated"
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == 2
    for turn in completed:
        deltas = [e.delta for e in events if e.type.endswith(".delta") and e.item_id == turn.item_id]
        assert "".join(deltas) == turn.transcript
        assert turn.usage.type == "duration" and turn.usage.seconds > 2  # type: ignore[union-attr]
        extra = turn.model_extra or {}
        assert extra["language"] == "eng"
        assert [w["word"] for w in extra["words"]] and extra["words"][0]["start"] >= 0
    heard = " ".join(turn.transcript for turn in completed)
    assert wer(reference, heard) <= 0.2, heard
    kinds = [e.type for e in events]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.committed", "conversation.item.added"):
        assert kind in kinds

    job = wait_job(stack, job_id)
    assert job["status"] == "completed" and job["audio_filename"] == "live.wav"
    results = stack.client.get(f"/jobs/{job_id}/results").json()
    assert results["transcript"]["text"] == " ".join(turn.transcript.strip() for turn in completed)
    srt = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt"})
    assert srt.status_code == 200 and "-->" in srt.text
    assert job["usage"]["audio_seconds"] == pytest.approx(len(pcm) / 2 / 24000, abs=0.2)


def test_manual_commits_and_clears_in_the_beta_schema(stack: RunningStack) -> None:
    pcm, reference = pcm24k("librivox-0880", gap_seconds=0.3)
    with sdk(stack).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.send_raw(
            json.dumps(
                {
                    "type": "transcription_session.update",
                    "session": {
                        "input_audio_format": "pcm16",
                        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": None,
                    },
                }
            )
        )
        noise = (np.random.default_rng(1).normal(0, 3000, 24000)).astype("<i2").tobytes()
        connection.input_audio_buffer.append(audio=base64.b64encode(noise).decode())
        connection.input_audio_buffer.clear()
        for chunk in appends(pcm):
            connection.input_audio_buffer.append(audio=chunk)
        connection.input_audio_buffer.commit()
        events = collect(connection, turns=1)

    kinds = [e.type for e in events]
    assert kinds[0] == "transcription_session.updated"
    assert "input_audio_buffer.cleared" in kinds and "conversation.item.created" in kinds
    assert "input_audio_buffer.speech_started" not in kinds
    (completed,) = [e for e in events if e.type.endswith(".completed")]
    assert wer(reference, completed.transcript) <= 0.2


def test_bad_events_get_errors_in_openais_shape_and_the_session_goes_on(stack: RunningStack) -> None:
    with connect(ws_url(stack), additional_headers=auth(stack)) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "session.created"
        for bad in (
            "{",
            json.dumps({"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e7"}),
            json.dumps({"type": "response.create"}),
            json.dumps({"type": "input_audio_buffer.commit"}),
        ):
            socket.send(bad)
            answer = json.loads(socket.recv(timeout=10))
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["code"] == "input_audio_buffer_commit_empty"
        socket.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads(socket.recv(timeout=10))["type"] == "input_audio_buffer.cleared"


def test_a_wrong_key_is_refused_at_the_handshake(stack: RunningStack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(stack), additional_headers={"Authorization": "Bearer sfk_wrong_key"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(InvalidStatus) as bad_intent:
        connect(ws_url(stack, "intent=conversation"), additional_headers=auth(stack))
    assert bad_intent.value.response.status_code == 400
    with pytest.raises(Exception) as through_sdk:
        with sdk(stack, key="sfk_wrong_key").realtime.connect(extra_query={"intent": "transcription"}) as connection:
            connection.recv()
    assert "401" in str(through_sdk.value)


def test_a_client_secret_opens_a_session_in_the_browsers_subprotocol(stack: RunningStack) -> None:
    minted = stack.client.post("/v1/realtime/client_secrets", json={"expires_after_seconds": 60})
    assert minted.status_code == 200, minted.text
    secret = minted.json()["value"]
    assert secret.startswith("ek_") and minted.json()["expires_at"] > time.time()
    with connect(ws_url(stack), subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "realtime"
        assert json.loads(socket.recv(timeout=10))["type"] == "session.created"
    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(stack), subprotocols=["realtime", f"openai-insecure-api-key.{forged}"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 401
    assert httpx.post(f"{stack.base_url}/v1/realtime/client_secrets").status_code == 401


def test_a_client_gone_mid_turn_leaves_a_job_with_what_was_heard(stack: RunningStack) -> None:
    pcm, _ = pcm24k("librivox-0870")
    query = "intent=transcription&workflow_type=full_pipeline"
    with connect(ws_url(stack, query), additional_headers=auth(stack)) as socket:
        job_id = json.loads(socket.recv(timeout=10))["session"]["id"]
        for chunk in list(appends(pcm))[:40]:  # 4 s: mid-sentence
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        with contextlib.suppress(TimeoutError):
            socket.recv(timeout=1)
    # Gone without a word: the job keeps the turn it was in, then goes on through full_pipeline.
    job = wait_job(stack, job_id)
    assert job["status"] == "completed", job
    steps = {step["step_type"]: step for step in job["steps"]}
    assert steps["TRANSCRIBE"]["worker_id"].startswith("live-")
    assert steps["SUMMARIZE"]["status"] == "completed"
    text = stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]
    assert "Dashwood" in text or "leisure" in text, text


def test_a_key_gets_at_most_its_sessions_at_once(stack: RunningStack) -> None:
    with (
        connect(ws_url(stack), additional_headers=auth(stack)) as first,
        connect(ws_url(stack), additional_headers=auth(stack)) as second,
    ):
        for socket in (first, second):
            assert json.loads(socket.recv(timeout=10))["type"] == "session.created"
        with connect(ws_url(stack), additional_headers=auth(stack)) as third:
            answer = json.loads(third.recv(timeout=10))
            assert answer["type"] == "error" and answer["error"]["code"] == "session_limit_reached"
            with pytest.raises(Exception):
                third.recv(timeout=10)
            assert third.close_code == 1013


def test_a_live_worker_killed_mid_session_closes_retryably_and_loses_no_job(stack: RunningStack) -> None:
    """SIGKILL the live component mid-turn: the client gets 1012 (reconnect), the supervisor restarts the
    component, and what the client had sent becomes a job transcribed from its audio."""
    pcm, _ = pcm24k("librivox-0870")
    with connect(ws_url(stack), additional_headers=auth(stack)) as socket:
        job_id = json.loads(socket.recv(timeout=10))["session"]["id"]
        for chunk in list(appends(pcm))[:50]:
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        time.sleep(0.5)
        (pid,) = [pid for pid, component in stack.children().items() if component == "realtime"]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            while True:
                socket.recv(timeout=30)
        assert socket.close_code == 1012
    _wait_live(stack)  # restarted; it records the orphaned session as it starts
    job = wait_job(stack, job_id, timeout=180)
    assert job["status"] == "completed", job
    assert job["options"].get("recovered") is True
    text = stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]
    assert "Dashwood" in text or "leisure" in text, text


def test_redact_pii_masks_each_turn_before_it_is_sent_and_in_the_job(stack: RunningStack) -> None:
    import av

    from shared.engines.audio import decode

    clip = decode(Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "en" / "espeak-pii_card.wav")
    audio = np.clip(np.concatenate([np.zeros(8000, np.float32), clip, np.zeros(24000, np.float32)]), -1, 1) * 32767
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
    frame = av.AudioFrame.from_ndarray(audio.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    pcm = b"".join(p.to_ndarray().tobytes() for p in [*resampler.resample(frame), *resampler.resample(None)])
    query = "intent=transcription&redact_pii=true"
    with connect(ws_url(stack, query), additional_headers=auth(stack)) as socket:
        job_id = json.loads(socket.recv(timeout=10))["session"]["id"]
        for chunk in appends(pcm):
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events: list[dict[str, Any]] = []
        while not any(e["type"].endswith(".completed") for e in events):
            events.append(json.loads(socket.recv(timeout=60)))

    completed = next(e for e in events if e["type"].endswith(".completed"))
    deltas = [e["delta"] for e in events if e["type"].endswith(".delta")]
    # The card number's digits, whichever kind the masker judged them (a card, or an identifying number).
    assert "[CREDIT_CARD]" in completed["transcript"] or "[ID_NUMBER]" in completed["transcript"]
    assert not any(digit in completed["transcript"] for digit in "0123456789")
    assert "".join(deltas) == completed["transcript"]  # no partial words went out unmasked
    assert not any(any(d in w["word"] for d in "0123456789") for w in completed["words"])
    job = wait_job(stack, job_id)
    assert job["options"]["redact_pii"] is True
    text = stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]
    assert "[" in text and not any(digit in text for digit in "0123456789")
