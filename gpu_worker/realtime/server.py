"""The live component: OpenAI Realtime-compatible transcription over WebSockets at /v1/realtime.

It holds its own Whisper model (never the API's process), checks the caller at the handshake (an API key
as `Authorization: Bearer` or `x-api-key`, or a short-lived client secret `ek_…`, also accepted in the
`openai-insecure-api-key.` subprotocol browsers use), limits concurrent sessions per key and per
worker, and runs each session (gpu_worker/realtime/session.py) until the client closes it. When a
session ends, what it heard becomes a job (gpu_worker/realtime/recording.py).

Under load it degrades in this order: partial results first (skipped while decodes queue up), never
a turn's final transcript or its audio; a session past its longest length, a client that stops reading
for `SEND_TIMEOUT_SECONDS`, or one more session than allowed gets an `error`, then a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gpu_worker.realtime.protocol import ProtocolError, error_event
from gpu_worker.realtime.recording import JobRecorder, LiveJobRefused, live_job_request
from gpu_worker.realtime.session import LiveSession
from gpu_worker.realtime.turns import DecodeLoad, Limits, SessionOver, TurnDecoder
from shared.core.config import Settings
from shared.engines.speech.bundled_model import resolve_model
from shared.engines.speech.transcriber import check_decodes
from shared.jobs.keys import BOOTSTRAP_KEY_ID, client_secret_principal, find_active_key, matches_bootstrap
from shared.runtime import Runtime
from shared.runtime.metrics import LIVE_SESSIONS, exposition
from shared.storage.signing import load_signing_key

log = logging.getLogger(__name__)

SUBPROTOCOL_KEY = "openai-insecure-api-key."
SEND_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE_BYTES = 21 * 1024 * 1024
"""One event: 15 MiB of audio in base64, and its JSON around it."""
PATH = "/v1/realtime"


@dataclass(frozen=True)
class Caller:
    principal_id: str


class Credentials:
    """Who a handshake's credential stands for: the bootstrap key, a stored key, or a client secret."""

    def __init__(self, settings: Settings, sessions: Callable[[], Any], signing_key: bytes) -> None:
        self._bootstrap = settings.api_key.get_secret_value() if settings.api_key else None
        self._sessions = sessions
        self._signing_key = signing_key

    def principal(self, presented: str | None) -> str | None:
        if not presented or len(presented) > 8192:
            return None
        if presented.startswith("ek_"):
            return client_secret_principal(presented, signing_key=self._signing_key, now=time.time())
        if matches_bootstrap(presented, self._bootstrap):
            return BOOTSTRAP_KEY_ID
        with self._sessions() as session:
            stored = find_active_key(session=session, presented=presented)
        return stored.id if stored is not None else None


def presented_credential(request: Request) -> str | None:
    """The credential of a handshake: x-api-key, a bearer token, or the browsers' key subprotocol."""
    headers = request.headers
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    for header in headers.get_all("sec-websocket-protocol"):
        for part in header.split(","):
            offered = part.strip()
            if offered.startswith(SUBPROTOCOL_KEY):
                return offered[len(SUBPROTOCOL_KEY) :]
    return None


def _refusal(status: HTTPStatus, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    response = Response(status.value, status.phrase, _headers({"Content-Type": "application/json"}), body)
    return response


def _headers(values: dict[str, str]) -> Any:
    from websockets.datastructures import Headers

    return Headers(values)


class LiveServer:
    def __init__(
        self,
        settings: Settings,
        *,
        credentials: Credentials,
        decoder: TurnDecoder,
        executor: ThreadPoolExecutor,
        recorder: Callable[[LiveSession, str, dict[str, list[str]]], Any] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._decoder = decoder
        self._executor = executor
        self._recorder = recorder
        self._workdir = workdir or Path(tempfile.gettempdir())
        self.sessions: dict[str, LiveSession] = {}
        self._per_key: Counter[str] = Counter()
        self._load = DecodeLoad()
        self.port: int | None = None

    async def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        if split.path in ("/health", "/ready", "/metrics") and "upgrade" not in request.headers:
            return self._probe(split.path)
        if split.path.rstrip("/") != PATH:
            return _refusal(HTTPStatus.NOT_FOUND, "not_found", f"no WebSocket route {split.path}")
        query = parse_qs(split.query)
        intent = query.get("intent", ["transcription"])[0]
        if intent != "transcription":
            return _refusal(
                HTTPStatus.BAD_REQUEST, "unsupported_intent", "this endpoint serves intent=transcription sessions only"
            )

        try:
            job = await asyncio.to_thread(live_job_request, query, self.settings)
        except LiveJobRefused as refused:
            return _refusal(HTTPStatus.BAD_REQUEST, "invalid_request", str(refused))
        principal = await asyncio.to_thread(self._credentials.principal, presented_credential(request))
        if principal is None:
            log.info("live session refused: credential", extra={"action": "live_refused"})
            return _refusal(
                HTTPStatus.UNAUTHORIZED,
                "invalid_api_key",
                "an API key or a live client secret is required and must be valid",
            )
        connection.caller = Caller(principal)  # type: ignore[attr-defined]
        connection.query = query  # type: ignore[attr-defined]
        connection.redact = bool(job.options.get("redact_pii"))  # type: ignore[attr-defined]
        return None

    def _probe(self, path: str) -> Response:
        """Liveness, readiness (how many sessions it holds) and Prometheus metrics, on the live port."""
        if path == "/metrics":
            body, content_type = exposition()
            return Response(200, "OK", _headers({"Content-Type": content_type}), body)
        answer = {"status": "ok", "sessions": len(self.sessions), "max_sessions": self.settings.realtime_max_sessions}
        return Response(200, "OK", _headers({"Content-Type": "application/json"}), json.dumps(answer).encode())

    @staticmethod
    def _subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        """`realtime` where offered; else the first offered (a browser refuses a handshake that picks none)."""
        del connection
        if "realtime" in offered:
            return Subprotocol("realtime")
        plain = [name for name in offered if not name.startswith(SUBPROTOCOL_KEY)]
        return plain[0] if plain else (offered[0] if offered else None)

    async def handle(self, connection: ServerConnection) -> None:
        caller: Caller = connection.caller  # type: ignore[attr-defined]
        query: dict[str, list[str]] = connection.query  # type: ignore[attr-defined]
        open_link = {"open": True}

        async def send(event: dict[str, Any]) -> None:
            if not open_link["open"]:
                return
            try:
                await asyncio.wait_for(connection.send(json.dumps(event)), SEND_TIMEOUT_SECONDS)
            except (ConnectionClosed, TimeoutError):
                open_link["open"] = False

        refusal = self._over_limit(caller)
        if refusal is not None:
            await send(error_event(ProtocolError(refusal, code="session_limit_reached")))
            await connection.close(1013, "too many live sessions")
            return
        session_id = str(uuid.uuid4())  # the id of the job the session is recorded as
        session = LiveSession(
            session_id=session_id,
            send=send,
            decoder=self._decoder,
            executor=self._executor,
            recording=self._workdir / f"{session_id}.wav",
            limits=Limits(
                max_session_seconds=self.settings.realtime_max_session_seconds,
                max_partials=max(1, self.settings.realtime_decoders - 1),
                # with one decode thread there is none kept for finals for a turn's first words to take
                first_words_partials=min(1, self.settings.realtime_decoders - 1),
            ),
            load=self._load,
            redact=_masked if connection.redact else None,  # type: ignore[attr-defined]
        )
        self.sessions[session_id] = session
        self._per_key[caller.principal_id] += 1
        LIVE_SESSIONS.inc()
        if self._recorder is not None:
            # Who and what, beside the audio on disk: a worker killed mid-session leaves both, and the
            # next start records them as a job (JobRecorder.recover).
            sidecar = session.recording.path.with_suffix(".json")
            sidecar.write_text(json.dumps({"principal_id": caller.principal_id, "query": query}))
        log.info("live session opened", extra={"action": "live_session_opened", "session_id": session_id})
        decoding = asyncio.create_task(session.run())
        try:
            await session.start()
            async for message in connection:
                try:
                    await session.receive(message)
                except SessionOver as over:
                    await send(error_event(ProtocolError(str(over), code="session_expired")))
                    break
                if not open_link["open"]:
                    break
        except ConnectionClosed:
            pass
        finally:
            await session.close()
            await decoding
            session.recording.close()
            with contextlib.suppress(ConnectionClosed):
                await connection.close()
            self.sessions.pop(session_id, None)
            self._per_key[caller.principal_id] -= 1
            LIVE_SESSIONS.dec()
            log.info(
                "live session closed",
                extra={"action": "live_session_closed", "session_id": session_id, "turns": len(session.completed)},
            )
            if self._recorder is not None:
                await asyncio.to_thread(self._recorder, session, caller.principal_id, query)
            session.recording.path.unlink(missing_ok=True)
            session.recording.path.with_suffix(".json").unlink(missing_ok=True)

    def _over_limit(self, caller: Caller) -> str | None:
        if len(self.sessions) >= self.settings.realtime_max_sessions:
            return (
                f"this live worker holds its most sessions ({self.settings.realtime_max_sessions}); try again shortly"
            )
        if self._per_key[caller.principal_id] >= self.settings.realtime_max_sessions_per_key:
            return f"this key has its most live sessions open ({self.settings.realtime_max_sessions_per_key})"
        return None

    async def serve(self, stopping: asyncio.Event, *, ready: Callable[[int], None] | None = None) -> None:
        async with serve(
            self.handle,
            self.settings.realtime_host,
            self.settings.realtime_port,
            process_request=self._check,
            select_subprotocol=self._subprotocol,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=4,
            ping_interval=20,
            ping_timeout=60,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("live transcription listening", extra={"action": "live_listening", "port": self.port})
            if ready is not None:
                ready(self.port)
            await stopping.wait()


def _masked(text: str, words: list[dict[str, Any]], language: str | None) -> tuple[str, list[dict[str, Any]]]:
    """A turn's transcript and words masked; the session calls it on a thread, so the masker loads (once
    per process) with the first turn that needs it, not in the handshake."""
    redact: Callable[[str, list[dict[str, Any]], str | None], tuple[str, list[dict[str, Any]]]] = _redactor()
    return redact(text, words, language)


@functools.cache
def _redactor() -> Any:
    """PII masking of live turns, with the redactor the PII step uses."""
    # lazy: the PII recogniser takes seconds to import; only jobs that mask PII pay it
    from shared.engines.pii import default_redactor

    redactor = default_redactor()

    def redact(text: str, words: list[dict[str, Any]], language: str | None) -> tuple[str, list[dict[str, Any]]]:
        code = language or "en"
        masked, _ = redactor.redact_text(text, language=code)
        return masked, redactor.redact_words(words, language=code)

    return redact


def build_decoder(settings: Settings) -> TurnDecoder:
    """The live worker's own Whisper model: REALTIME_DECODERS CTranslate2 workers of REALTIME_THREADS each."""
    from faster_whisper import WhisperModel

    # lazy: faster-whisper loads only when the server starts serving
    from gpu_worker.realtime.decoder import WhisperTurnDecoder

    config = settings.whisper
    model = WhisperModel(
        resolve_model(config.model, settings.model_cache_dir),
        device=config.device,
        compute_type=config.compute_type,
        cpu_threads=settings.realtime_threads,
        num_workers=settings.realtime_decoders,
    )
    if model.model.device == "cuda":
        # CTranslate2 opens cuBLAS at its first decode: a GPU that cannot decode stops the start-up here
        check_decodes(model, device_setting=f"WHISPER_DEVICE={config.device}")
    return WhisperTurnDecoder(
        model, final_beam_size=settings.realtime_final_beam_size, final_context=settings.realtime_final_context
    )


def main(settings: Settings) -> int:
    """Run the live component until SIGTERM/SIGINT."""

    runtime = Runtime(settings)
    workdir = settings.speechflow_home / "live"
    workdir.mkdir(parents=True, exist_ok=True)
    recorder = JobRecorder(runtime)
    recorder.recover(workdir)
    decoder = build_decoder(settings)
    executor = ThreadPoolExecutor(max_workers=settings.realtime_decoders, thread_name_prefix="live-decode")
    server = LiveServer(
        settings,
        credentials=Credentials(settings, runtime.sessions, load_signing_key(settings)),
        decoder=decoder,
        executor=executor,
        recorder=recorder,
        workdir=workdir,
    )

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await server.serve(stopping)

    try:
        asyncio.run(run())
    finally:
        executor.shutdown(wait=True)
        runtime.close()
    return 0
