"""What an outside probe of the running stack found (issue 20), asked again of the running stack: the
API alone under `python -m shared.hosting`, over real HTTP and keep-alive connections."""

from __future__ import annotations

import io
import select
import socket
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(components=("api",)) as running:
        yield running


def wav(*, tag: bytes | None = None, channels: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 8000)
    content = bytearray(buffer.getvalue())
    if tag is not None:
        content[20:22] = tag
    if channels is not None:
        content[22:24] = channels
    return bytes(content)


CORRUPT = [
    pytest.param(wav(tag=b"\x99\x99"), id="unknown-format-tag"),
    pytest.param(wav(channels=b"\0\0"), id="zero-channels"),
]


@pytest.mark.parametrize("content", CORRUPT)
def test_a_corrupt_wav_is_a_422_at_start_and_the_connection_goes_on(stack: RunningStack, content: bytes) -> None:
    body = {"workflow_type": "transcribe_only", "source_language": "en", "audio_filename": "a.wav"}
    created = stack.client.post("/jobs", json=body).json()
    assert httpx.put(created["upload_url"], content=content, headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
    started = stack.start(created["job_id"])
    assert started.status_code == 422, started.text
    assert started.json()["error"]["code"] == "invalid_audio"
    assert stack.job(created["job_id"])["status"] == "pending_upload", "the client may upload again"


@pytest.mark.parametrize("content", CORRUPT)
def test_a_corrupt_wav_is_a_400_on_the_openai_front(stack: RunningStack, content: bytes) -> None:
    response = stack.client.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("a.wav", content, "audio/wav")}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "file"


def test_calendar_edges_of_usage_are_422_on_one_keep_alive_connection(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.base_url, headers=stack.client.headers, timeout=10) as client:
        for params in ({"to": "0001-01-01T00:00:00"}, {"from": "9999-12-31T23:59:59.999999-23:59"}):
            response = client.get("/usage", params=params)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "validation_error"
        assert client.get("/health").status_code == 200, "the connection is still usable"


def test_the_upload_url_refuses_a_write_after_start(stack: RunningStack) -> None:
    body = {"workflow_type": "transcribe_only", "source_language": "en", "audio_filename": "a.wav"}
    created = stack.client.post("/jobs", json=body).json()
    headers = {"x-ms-blob-type": "BlockBlob"}
    assert httpx.put(created["upload_url"], content=wav(), headers=headers).status_code == 201
    assert stack.start(created["job_id"]).status_code == 202
    again = httpx.put(created["upload_url"], content=b"something else", headers=headers)
    assert again.status_code == 403, again.text


@pytest.mark.parametrize(
    "body",
    [
        {"workflow_type": "transcribe_only", "source_language": "xx"},
        {"workflow_type": "transcribe_only", "source_language": "qaa"},
        {"workflow_type": "full_pipeline", "target_language": "zz"},
        {"workflow_type": "transcribe_only", "source_language": "en", "prompt": "a\x00b"},
        {"workflow_type": "transcribe_only", "source_language": "en", "hotwords": ["a\x00b"]},
    ],
)
def test_unknown_languages_and_nul_characters_are_422_at_create(stack: RunningStack, body: dict[str, Any]) -> None:
    response = stack.client.post("/jobs", json={"audio_filename": "a.wav", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


def test_a_chunked_openai_upload_is_cut_off_at_the_limit(stack: RunningStack) -> None:
    """150 MiB sent chunked: the answer (413) comes once about 25 MiB have gone, not after all of it."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    boundary = "speechflowprobe"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    request = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Bearer {stack.env['SPEECHFLOW_API_KEY']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"\0" * MIB
    sent = 0
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request + f"{len(head):x}\r\n".encode() + head + b"\r\n")
        deadline = time.monotonic() + 120
        while sent < 150 * MIB and time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], 0)
            if readable:
                break
            try:
                connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:  # the server stopped reading and closed: the answer is waiting
                break
            sent += len(piece)
        connection.settimeout(30)
        while b"\r\n\r\n" not in answer:
            data = connection.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 60 * MIB, f"{sent // MIB} MiB were read before the refusal"
