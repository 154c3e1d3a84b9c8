"""`speechflow listen` (shared/cli/live_client.py) without a server: its arguments and refusals, the live
endpoint's address, the session it asks for, how events become captions (a live line that grows with
the deltas, finished lines with their time range), and a whole session against a scripted connection
that answers as the live component does (events in order, a turn left open when the file ends committed
by the client)."""

from __future__ import annotations

import io
import json
import queue
import socket
import struct
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from shared.cli import live_client
from shared.cli import main as cli
from shared.cli.live_client import Captions, LiveError, Progress, realtime_url, session_update, stream
from shared.core.config import Settings
from shared.core.db import migrate
from tests.support.pipeline import API_KEY, build_stack

ITEM = "item_abc_0001"


def wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack("<h", 1000) * int(rate * seconds))
    return path


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


# --- arguments


def test_listen_arguments_and_their_defaults(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["listen", "clip.wav"])
    assert (args.command, args.file, args.speed, args.language, args.json) == (
        "listen",
        Path("clip.wav"),
        1.0,
        None,
        False,
    )
    args = cli.build_parser().parse_args(
        ["listen", "a.mp3", "--speed", "4", "-l", "fr", "--json", "--api", "http://h:1", "--api-key", "k"]
    )
    assert (args.speed, args.language, args.json, args.api, args.api_key) == (4.0, "fr", True, "http://h:1", "k")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["listen", "missing.wav"], "missing.wav is not a file"),
        (["listen", "{clip}", "--speed", "0"], "--speed: give a number from 0.1 to 100"),
        (["listen", "{clip}", "--speed", "fast"], "invalid float value"),
        (["listen"], "the following arguments are required: file"),
    ],
)
def test_bad_listen_input_is_exit_code_1_and_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = wav(tmp_path / "clip.wav")
    assert cli.main([arg.replace("{clip}", str(clip)) for arg in argv]) == 1
    assert says in last_error_line(capsys)


def test_an_unreachable_live_endpoint_is_exit_code_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    clip = wav(tmp_path / "clip.wav")
    assert cli.main(["listen", str(clip), "--api", f"http://127.0.0.1:{port}", "--api-key", "k"]) == 2
    line = last_error_line(capsys)
    assert f"cannot reach SpeechFlow's live endpoint at ws://127.0.0.1:{port}/v1/realtime" in line


def test_a_refused_key_is_exit_code_1_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(url: str, key: str | None) -> Any:
        raise LiveError("the live endpoint refused the session (401): an API key is required and must be valid")

    monkeypatch.setattr(live_client, "open_connection", refuse)
    original = live_client.listen
    monkeypatch.setattr(live_client, "listen", lambda *a, **k: original(*a, **k, connector=refuse))
    clip = wav(tmp_path / "clip.wav")
    assert cli.main(["listen", str(clip), "--api", "http://127.0.0.1:1", "--api-key", "wrong"]) == 1
    assert "clip.wav: the live endpoint refused the session (401)" in last_error_line(capsys)


def test_a_file_that_is_not_audio_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert cli.main(["listen", str(text), "--api", "http://127.0.0.1:1", "--api-key", "k"]) == 1
    assert "notes.txt: not an audio file" in last_error_line(capsys)


# --- the protocol


def test_the_live_endpoint_is_under_the_api_base_url() -> None:
    assert realtime_url("http://localhost:7071") == "ws://localhost:7071/v1/realtime?intent=transcription"
    assert realtime_url("https://sf.example.com/") == "wss://sf.example.com/v1/realtime?intent=transcription"
    assert realtime_url("https://sf.example.com/base", workflow="full_pipeline") == (
        "wss://sf.example.com/base/v1/realtime?intent=transcription&workflow_type=full_pipeline"
    )
    with pytest.raises(ValueError, match="not an http"):
        realtime_url("localhost:7071")


def test_the_session_asks_for_pcm_24k_server_vad_and_the_language() -> None:
    update = session_update(language="fr")
    audio_input = update["session"]["audio"]["input"]
    assert update["type"] == "session.update" and update["session"]["type"] == "transcription"
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["transcription"] == {"model": "whisper-1", "language": "fr"}
    assert audio_input["turn_detection"] == {"type": "server_vad", "silence_duration_ms": 500}
    assert "language" not in session_update()["session"]["audio"]["input"]["transcription"]


def test_the_file_is_sent_as_24k_pcm16(tmp_path: Path) -> None:
    pcm = live_client.pcm24k(wav(tmp_path / "clip.wav", seconds=1.0, rate=16000))
    assert abs(len(pcm) - 48000) <= 64  # 1 s at 24 kHz, 2 bytes a sample
    assert next(live_client.chunks(pcm)) == pcm[:4800]  # 100 ms appends


# --- captions


def test_captions_grow_with_deltas_and_finish_with_the_time_range() -> None:
    captions = Captions()
    assert captions.apply({"type": "input_audio_buffer.speech_started", "item_id": ITEM, "audio_start_ms": 1200}) == []
    assert captions.live_line().plain == "…"
    for delta in (" And", " Mr. John"):
        captions.apply({"type": live_client.DELTA, "item_id": ITEM, "delta": delta})
    line = captions.live_line()
    assert line.plain == "And Mr. John" and line.style == "grey50"
    captions.apply({"type": "input_audio_buffer.speech_stopped", "item_id": ITEM, "audio_end_ms": 65500})
    (final,) = captions.apply({"type": live_client.COMPLETED, "item_id": ITEM, "transcript": " And Mr. John Dashwood."})
    assert final.plain == "[00:01.2 → 01:05.5] And Mr. John Dashwood."
    assert captions.live_line().plain == "…" and captions.finals == ["And Mr. John Dashwood."]


def test_a_final_without_vad_events_takes_its_range_from_the_words_and_errors_show() -> None:
    captions = Captions()
    words = [{"word": " Hi", "start": 3.0, "end": 3.4}, {"word": " there", "start": 3.4, "end": 4.25}]
    (final,) = captions.apply(
        {"type": live_client.COMPLETED, "item_id": ITEM, "transcript": "Hi there", "words": words}
    )
    assert final.plain == "[00:03.0 → 00:04.2] Hi there"
    (error,) = captions.apply({"type": "error", "error": {"code": "invalid_value", "message": "bad"}})
    assert error.plain == "server error (invalid_value): bad"
    (failed,) = captions.apply({"type": live_client.FAILED, "item_id": ITEM, "error": {"message": "boom"}})
    assert "could not be transcribed: boom" in failed.plain


# --- a whole session against a scripted server


class ScriptedServer:
    """Answers as the live component does, in order: session.created, session.updated for each update,
    a turn that starts with the second append and is left open; a commit ends it with a delta and its
    transcript."""

    def __init__(self, *, refuse_update: bool = False) -> None:
        self.events: queue.Queue[str] = queue.Queue()
        self.sent: list[dict[str, Any]] = []
        self.appends = 0
        self.closed = False
        self.refuse_update = refuse_update
        self.emit({"type": "session.created", "session": {"id": "job-123"}})

    def emit(self, event: dict[str, Any]) -> None:
        self.events.put(json.dumps(event))

    def send(self, message: str) -> None:
        event = json.loads(message)
        self.sent.append(event)
        kind = event["type"]
        if kind == "session.update":
            if self.refuse_update:
                self.emit(
                    {
                        "type": "error",
                        "error": {
                            "code": "invalid_value",
                            "message": "unsupported language 'zz'",
                            "param": "session.audio.input.transcription.language",
                        },
                    }
                )
            else:
                self.emit({"type": "session.updated", "session": {"id": "job-123"}})
        elif kind == "input_audio_buffer.append":
            self.appends += 1
            if self.appends == 2:
                self.emit({"type": "input_audio_buffer.speech_started", "item_id": ITEM, "audio_start_ms": 100})
                self.emit({"type": live_client.DELTA, "item_id": ITEM, "delta": " Hello"})
        elif kind == "input_audio_buffer.commit":
            self.emit({"type": "input_audio_buffer.committed", "item_id": ITEM})
            self.emit({"type": live_client.DELTA, "item_id": ITEM, "delta": " world."})
            self.emit({"type": live_client.COMPLETED, "item_id": ITEM, "transcript": " Hello world.", "words": []})

    def recv(self, timeout: float | None = None) -> str:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None

    def close(self) -> None:
        self.closed = True


def test_a_session_sends_the_audio_commits_the_open_turn_and_waits_for_its_transcript() -> None:
    server = ScriptedServer()
    seen: list[dict[str, Any]] = []
    pcm = b"\x00\x01" * (24000 // 2)  # 0.5 s: five appends
    progress = stream(server, pcm, speed=100, update=session_update(), on_event=seen.append)
    assert isinstance(progress, Progress) and progress.job_id == "job-123" and progress.done
    kinds = [event["type"] for event in server.sent]
    assert kinds == [
        "session.update",
        *["input_audio_buffer.append"] * 5,
        "session.update",
        "input_audio_buffer.commit",
    ]
    assert seen[-1]["type"] == live_client.COMPLETED
    assert "".join(e["delta"] for e in seen if e["type"] == live_client.DELTA) == " Hello world."


def test_listen_prints_captions_and_the_job_id(tmp_path: Path) -> None:
    server = ScriptedServer()
    out, err = io.StringIO(), io.StringIO()
    job = live_client.listen(
        wav(tmp_path / "clip.wav", seconds=0.5),
        api="http://127.0.0.1:1",
        api_key="k",
        speed=100,
        out=Console(file=out, width=100),
        err=Console(file=err),
        connector=lambda url, key: server,
    )
    assert job == "job-123" and server.closed
    assert out.getvalue().splitlines() == ["[00:00.1 → 00:00.1] Hello world.", "job job-123"]


def test_listen_json_prints_each_server_event_as_a_json_line(tmp_path: Path) -> None:
    server = ScriptedServer()
    out, err = io.StringIO(), io.StringIO()
    live_client.listen(
        wav(tmp_path / "clip.wav", seconds=0.5),
        api="http://127.0.0.1:1",
        api_key="k",
        speed=100,
        as_json=True,
        out=Console(file=out),
        err=Console(file=err),
        connector=lambda url, key: server,
    )
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["type"] == "session.created" and events[-1]["type"] == live_client.COMPLETED
    assert err.getvalue().strip() == "job job-123"


def test_a_refused_session_update_ends_the_session_with_its_message() -> None:
    server = ScriptedServer(refuse_update=True)
    with pytest.raises(LiveError, match="unsupported language 'zz'"):
        stream(server, b"\x00\x00" * 2400, speed=100, update=session_update(language="zz"), on_event=lambda _e: None)


# --- the live-captions page


def test_the_live_page_is_served_without_a_key_and_holds_none(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'live.db'}")
    migrate(settings)
    stack = build_stack(settings)
    try:
        page = stack.client.get("/live", headers={"x-api-key": ""})
    finally:
        stack.client.close()
        stack.runtime.close()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    for needed in ("/v1/realtime/client_secrets", '"openai-insecure-api-key."', "audioWorklet", "getUserMedia"):
        assert needed in html
    assert API_KEY not in html


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (401, live_client.LiveError, "the live endpoint refused the session (401): no key"),
        (503, live_client.LiveUnreachable, "live transcription is not available at ws://h/v1/realtime (503): no key"),
    ],
)
def test_a_refused_handshake_says_why(
    status: int, error: type[Exception], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    body = json.dumps({"error": {"code": "x", "message": "no key"}}).encode()

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise InvalidStatus(Response(status, "refused", Headers(), body))

    monkeypatch.setattr("websockets.sync.client.connect", refuse)
    with pytest.raises(error) as raised:
        live_client.open_connection("ws://h/v1/realtime", "k")
    assert str(raised.value) == says
