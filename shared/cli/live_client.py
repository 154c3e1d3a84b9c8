"""`speechflow listen FILE`: an audio file streamed to the live endpoint (`/v1/realtime`, OpenAI's Realtime
transcription protocol) as a microphone would send it, at real-time pace or `--speed` times faster,
with each turn's words shown as they come (a live line that grows with the deltas) and each finished
turn printed with its time range; or, with `--json`, the server's events as JSON lines.

The file is decoded with the project's decoder (shared/engines/audio.py, PyAV) straight to 24 kHz mono and sent
as PCM16 in 100 ms appends. When all of it is sent the client asks for a `session.updated` (the server
takes events in order, so its answer means every append was heard), commits a turn still open, waits
for every committed turn's transcript, and closes: the server records the session as a job, whose id
(`session.id`) is printed at the end.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from rich.console import Console
from rich.live import Live
from rich.text import Text

RATE = 24000
CHUNK_MS = 100
IDLE_TIMEOUT_S = 120.0
"""How long the client waits for the server's next event once all the audio is sent."""
OPEN_TIMEOUT_S = 15.0
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
DELTA = "conversation.item.input_audio_transcription.delta"


class LiveError(Exception):
    """The session could not go on: refused, or ended by the server (one line for the user)."""


class LiveUnreachable(Exception):
    """The live endpoint did not answer (or is not running)."""


class Connection(Protocol):
    """What the client needs of a WebSocket (`websockets.sync.client.ClientConnection`)."""

    def send(self, message: str) -> None: ...

    def recv(self, timeout: float | None = None) -> str | bytes: ...

    def close(self) -> None: ...


# --- audio


def pcm24k(path: Path) -> bytes:
    """The file as 24 kHz mono PCM16 little-endian: decoded and resampled by shared/engines/audio.py (PyAV)."""
    import numpy as np

    # lazy: PyAV and numpy load only when a file is streamed, not for the other commands
    from shared.engines.audio import decode

    samples = decode(path, sample_rate=RATE)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def chunks(pcm: bytes, chunk_ms: int = CHUNK_MS) -> Iterator[bytes]:
    size = RATE * 2 * chunk_ms // 1000
    for at in range(0, len(pcm), size):
        yield pcm[at : at + size]


# --- the protocol


def realtime_url(api: str, *, workflow: str | None = None) -> str:
    """The WebSocket address of the live endpoint under the API's base URL."""
    parts = urlsplit(api.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {api}")
    query: dict[str, str] = {"intent": "transcription"}
    if workflow:
        query["workflow_type"] = workflow
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/realtime", urlencode(query), ""))


def session_update(*, language: str | None = None, prompt: str | None = None, silence_ms: int = 500) -> dict[str, Any]:
    transcription: dict[str, Any] = {"model": "whisper-1"}
    if language:
        transcription["language"] = language
    if prompt:
        transcription["prompt"] = prompt
    return {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": transcription,
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
                }
            },
        },
    }


def append(chunk: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})


@dataclass
class Progress:
    """Where the session stands, from the server's events: which turns are open, which await their
    transcript, and whether the server has heard all the audio."""

    job_id: str | None = None
    open_turns: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    updates: int = 0
    all_heard: bool = False
    """The `session.updated` asked for after the last append has come."""

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        item = event.get("item_id")
        if kind in ("session.created", "transcription_session.created"):
            self.job_id = (event.get("session") or {}).get("id")
        elif kind in ("session.updated", "transcription_session.updated"):
            self.updates += 1
        elif kind == "input_audio_buffer.speech_started" and item:
            self.open_turns.add(item)
        elif kind == "input_audio_buffer.committed" and item:
            self.open_turns.discard(item)
            self.pending.add(item)
        elif kind in (COMPLETED, FAILED) and item:
            self.open_turns.discard(item)
            self.pending.discard(item)

    @property
    def done(self) -> bool:
        return self.all_heard and not self.open_turns and not self.pending


# --- showing the events


def clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


@dataclass
class Captions:
    """The captions a person reads: finished turns as lines with their time range, and the open turn's
    words so far (the deltas, which are never taken back)."""

    partial: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    stopped: dict[str, float] = field(default_factory=dict)
    finals: list[str] = field(default_factory=list)

    def apply(self, event: dict[str, Any]) -> list[Text]:
        """Take one event; returns the lines it finishes (to print above the live line)."""
        kind = event.get("type")
        item = str(event.get("item_id") or "")
        if kind == "input_audio_buffer.speech_started":
            self.started[item] = float(event.get("audio_start_ms") or 0) / 1000
            self.partial.setdefault(item, "")
        elif kind == "input_audio_buffer.speech_stopped":
            self.stopped[item] = float(event.get("audio_end_ms") or 0) / 1000
        elif kind == DELTA:
            self.partial[item] = self.partial.get(item, "") + str(event.get("delta") or "")
        elif kind == COMPLETED:
            self.partial.pop(item, None)
            transcript = str(event.get("transcript") or "").strip()
            words = event.get("words") or []
            start = self.started.get(item, words[0]["start"] if words else 0.0)
            end = self.stopped.get(item, words[-1]["end"] if words else start)
            self.finals.append(transcript)
            if not transcript:
                return []
            line = Text(f"[{clock(start)} → {clock(end)}] ", style="cyan")
            line.append(transcript)
            return [line]
        elif kind == FAILED:
            self.partial.pop(item, None)
            message = (event.get("error") or {}).get("message", "")
            return [Text(f"(a turn could not be transcribed: {message})", style="red")]
        elif kind == "error":
            error = event.get("error") or {}
            return [Text(f"server error ({error.get('code')}): {error.get('message')}", style="red")]
        return []

    def live_line(self) -> Text:
        """The open turns' words so far, grey."""
        text = " ".join(words.strip() for words in self.partial.values() if words.strip())
        return Text(text or "…", style="grey50")


# --- the session


def stream(
    connection: Connection,
    pcm: bytes,
    *,
    speed: float = 1.0,
    update: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None],
    idle_timeout: float = IDLE_TIMEOUT_S,
    chunk_ms: int = CHUNK_MS,
    sleep: Callable[[float], None] = time.sleep,
) -> Progress:
    """Run one session on an open connection: configure it, send the audio from a thread at `speed` times
    real time, hand every server event to `on_event` until all turns are transcribed. Returns the session's
    progress (with the job id)."""
    progress = Progress()
    first = _receive(connection, OPEN_TIMEOUT_S)
    if first is None:
        raise LiveError(f"the live endpoint sent no session.created within {OPEN_TIMEOUT_S:.0f} s")
    on_event(first)
    progress.apply(first)
    if first.get("type") == "error":
        raise LiveError(_describe_error(first))
    connection.send(json.dumps(update))
    sent = threading.Event()
    failure: list[BaseException] = []

    def sender() -> None:
        try:
            begin = time.monotonic()
            for index, chunk in enumerate(chunks(pcm, chunk_ms)):
                connection.send(append(chunk))
                due = begin + (index + 1) * chunk_ms / 1000 / speed
                wait = due - time.monotonic()
                if wait > 0:
                    sleep(wait)
            connection.send(json.dumps(update))  # its session.updated says every append was heard
        except BaseException as error:  # reported by the reading thread
            failure.append(error)
        finally:
            sent.set()

    thread = threading.Thread(target=sender, name="listen-sender", daemon=True)
    thread.start()
    committed_open = False
    quiet_since = time.monotonic()
    while not progress.done:
        if failure:
            raise LiveError(f"sending the audio failed: {failure[0]}")
        event = _receive(connection, 1.0)
        if event is None:
            # A long silence sends nothing back; only once all the audio is out does quiet mean trouble.
            if not sent.is_set():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > idle_timeout:
                raise LiveError(f"the live session sent nothing for {idle_timeout:.0f} s")
            continue
        quiet_since = time.monotonic()
        progress.apply(event)
        if event.get("type") == "error":
            error = event.get("error") or {}
            if error.get("code") in FATAL_ERRORS or str(error.get("param") or "").startswith("session"):
                raise LiveError(_describe_error(event))  # the one line the user reads
        on_event(event)
        if sent.is_set() and progress.updates >= 2:
            progress.all_heard = True
        if progress.all_heard and progress.open_turns and not committed_open:
            connection.send(json.dumps({"type": "input_audio_buffer.commit"}))  # the turn the file ended in
            committed_open = True
    thread.join(timeout=5)
    return progress


FATAL_ERRORS = {"session_limit_reached", "session_expired"}


def _receive(connection: Connection, timeout: float) -> dict[str, Any] | None:
    """The next event, or None when none came within `timeout`."""
    from websockets.exceptions import ConnectionClosed

    try:
        message = connection.recv(timeout=timeout)
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        reason = closed.rcvd.reason if closed.rcvd is not None else ""
        code = closed.rcvd.code if closed.rcvd is not None else 1006
        raise LiveError(
            f"the live session was closed by the server ({code}{': ' + reason if reason else ''})"
        ) from None
    event: dict[str, Any] = json.loads(message)
    return event


def _describe_error(event: dict[str, Any]) -> str:
    error = event.get("error") or {}
    return f"{error.get('message') or 'the server refused the session'} ({error.get('code')})"


def open_connection(url: str, api_key: str | None) -> Any:
    """Connect to the live endpoint; LiveUnreachable when nothing answers, LiveError on a refusal."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return connect(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT_S, max_size=None)
    except InvalidStatus as refused:
        status = refused.response.status_code
        message = _refusal_message(bytes(refused.response.body or b""))
        if status in (502, 503, 504):
            raise LiveUnreachable(f"live transcription is not available at {url} ({status}): {message}") from None
        raise LiveError(f"the live endpoint refused the session ({status}): {message}") from None
    except (OSError, TimeoutError, InvalidHandshake) as error:
        raise LiveUnreachable(f"cannot reach SpeechFlow's live endpoint at {url}: {error}") from None


def _refusal_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:300] or "no reason given"


def listen(
    path: Path,
    *,
    api: str,
    api_key: str | None,
    speed: float = 1.0,
    language: str | None = None,
    as_json: bool = False,
    out: Console | None = None,
    err: Console | None = None,
    connector: Callable[[str, str | None], Any] = open_connection,
) -> str:
    """Stream the file, show its captions (or the events as JSON lines); returns the job id."""
    out = out or Console(highlight=False)
    err = err or Console(stderr=True, highlight=False)
    pcm = pcm24k(path)
    if not pcm:
        raise LiveError(f"{path} holds no audio")
    url = realtime_url(api)
    update = session_update(language=language)
    connection = connector(url, api_key)
    try:
        if as_json:

            def show_json(event: dict[str, Any]) -> None:
                out.file.write(json.dumps(event, ensure_ascii=False) + "\n")
                out.file.flush()

            progress = stream(connection, pcm, speed=speed, update=update, on_event=show_json)
        else:
            captions = Captions()
            with Live(captions.live_line(), console=out, refresh_per_second=8, transient=True) as live:

                def show(event: dict[str, Any]) -> None:
                    for line in captions.apply(event):
                        live.console.print(line, soft_wrap=True)
                    live.update(captions.live_line())

                progress = stream(connection, pcm, speed=speed, update=update, on_event=show)
    finally:
        connection.close()
    job_id = progress.job_id or ""
    if as_json:
        err.print(f"job {job_id}")
    else:
        out.print(f"job {job_id}", style="bold")
    return job_id
