"""One live transcription session: audio in, turns detected, partial words confirmed as they agree,
each turn's final transcript, and the whole session kept (audio on disk, turns in memory) to be
recorded as a job when it ends.

The session is driven by its connection: `receive` for each client event (cheap: conversion, VAD,
turn detection), while `run` decodes on the process's decode threads — finals first, partials when
there is time (the first thing to go under load), never taking a confirmed word back.
"""

from __future__ import annotations

import array
import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpu_worker.realtime.protocol import (
    Append,
    Clear,
    Commit,
    ProtocolError,
    SessionConfig,
    Update,
    error_event,
    event_id,
    parse,
)
from gpu_worker.realtime.turns import (
    CompletedTurn,
    DecodeLoad,
    FinalDecode,
    Limits,
    PartialDecode,
    Recording,
    SessionOver,
    Turn,
    TurnDecoder,
    iso639_3,
    partial_due,
    repeated_after,
    words_after,
)
from shared.engines.speech.streaming import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioInput,
    StreamingVad,
    TurnDetector,
    TurnEvent,
)
from shared.runtime.metrics import LIVE_AUDIO_SECONDS, LIVE_PARTIALS_SKIPPED, LIVE_TURN_LATENCY

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Redact = Callable[[str, list[dict[str, Any]], str | None], tuple[str, list[dict[str, Any]]]]
"""PII masking of a turn's transcript and words, in its language (shared/engines/pii.py)."""
MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio."""
PROMPT_CHARACTERS = 400
"""How much of the previous turns' text goes into the next turn's prompt."""


class LiveSession:
    def __init__(
        self,
        *,
        session_id: str,
        send: Send,
        decoder: TurnDecoder,
        executor: Executor,
        recording: Path,
        config: SessionConfig | None = None,
        limits: Limits | None = None,
        load: DecodeLoad | None = None,
        vad: StreamingVad | None = None,
        redact: Redact | None = None,
    ) -> None:
        self.id = session_id
        self.config = config or SessionConfig()
        self.limits = limits or Limits()
        self._send = send
        self._decoder = decoder
        self._executor = executor
        self._redact = redact
        self.recording = Recording(recording)
        self._input = AudioInput(self.config.audio_format, self.config.rate)
        self._vad = vad or StreamingVad()
        self._detector = self._new_detector()
        self._buffer_start = 0
        self._open: Turn | None = None
        self._finals: asyncio.Queue[Turn | None] = asyncio.Queue()
        """Committed turns waiting for their final decode; None once the session has closed."""
        self._wake = asyncio.Event()
        self._closing = False
        self._items = 0
        self._previous_item: str | None = None
        self.completed: list[CompletedTurn] = []
        self.started_at = time.monotonic()
        self.load = load or DecodeLoad()
        self._speech = array.array("f")
        """Silero VAD's speech probability of every 32 ms frame of the session, whatever the turn detection."""
        self.partials_skipped = 0
        self.turn_latencies: list[float] = []

    # --- the client's events

    async def start(self) -> None:
        kind = "transcription_session.created" if self.config.schema == "beta" else "session.created"
        await self._emit(kind, session=self.config.describe(self.id))

    async def receive(self, text: str | bytes) -> None:
        try:
            command, _ = parse(text, self.config)
        except ProtocolError as error:
            await self._send(error_event(error))
            return
        if isinstance(command, Append):
            await self._append(command.audio)
        elif isinstance(command, Commit):
            await self._commit()
        elif isinstance(command, Clear):
            await self._clear()
        elif isinstance(command, Update):
            await self._update(command.config)

    async def _update(self, config: SessionConfig) -> None:
        format_changed = (config.audio_format, config.rate) != (self.config.audio_format, self.config.rate)
        detection_changed = config.turn_detection != self.config.turn_detection
        self.config = config
        if format_changed:
            self._input = AudioInput(config.audio_format, config.rate)
        if detection_changed and self._open is None:
            self._detector = self._new_detector()
        kind = "transcription_session.updated" if config.schema == "beta" else "session.updated"
        await self._emit(kind, session=config.describe(self.id))

    def backlog_seconds(self) -> float:
        """Audio committed or open but not yet through its final decode."""
        waiting = [turn.start for turn in list(self._finals._queue) if turn is not None]  # type: ignore[attr-defined]
        if self._open is not None:
            waiting.append(self._open.start)
        if not waiting:
            return 0.0
        return (self.recording.total - min(waiting)) / SAMPLE_RATE

    async def _append(self, data: bytes) -> None:
        while self.backlog_seconds() > self.limits.max_backlog_seconds and not self._closing:
            await asyncio.sleep(0.05)  # the socket is not read meanwhile: the client's sends wait
        samples = self._input.convert(data)
        if self.recording.total + samples.size > self.limits.max_session_seconds * SAMPLE_RATE:
            raise SessionOver("the session reached its longest allowed length")
        self.recording.add(samples)
        LIVE_AUDIO_SECONDS.inc(samples.size / SAMPLE_RATE)
        probabilities = self._vad.probabilities(samples)
        self._speech.extend(probabilities)
        if self.config.turn_detection is None:
            if self.recording.total - self._buffer_start > self.limits.max_backlog_seconds * SAMPLE_RATE:
                await self._commit()  # a buffer never committed is committed in pieces, not kept whole
            return
        for event in self._detector.feed(probabilities):
            await self._on_turn_event(event)
        if self._open is not None and self._partial_due(self._open):
            self._wake.set()
        self._trim()

    async def _on_turn_event(self, event: TurnEvent) -> None:
        at = event.at_ms * SAMPLE_RATE // 1000
        if event.kind == "speech_started":
            turn = Turn(
                item_id=self._next_item(), start=max(at, self._buffer_start), previous_item_id=self._previous_item
            )
            self._open = turn
            await self._emit("input_audio_buffer.speech_started", audio_start_ms=event.at_ms, item_id=turn.item_id)
        elif event.kind == "speech_paused":
            if self._open is not None and self._open.early is None:
                early = asyncio.create_task(self._final_decode(self._open, self.recording.total))
                early.add_done_callback(lambda task: task.cancelled() or task.exception())  # read, even if dropped
                self._open.early = early
        elif event.kind == "speech_resumed":
            if self._open is not None:
                self._open.early = None  # what it decodes is left to finish unread
        elif self._open is not None:
            turn, self._open = self._open, None
            turn.end = min(at, self.recording.total)
            await self._emit("input_audio_buffer.speech_stopped", audio_end_ms=event.at_ms, item_id=turn.item_id)
            await self._committed(turn)

    async def _commit(self) -> None:
        turn = self._open
        start = turn.start if turn is not None else self._buffer_start
        if self.recording.total - start < MIN_COMMIT_SAMPLES:
            error = ProtocolError(
                "the input audio buffer holds less than 100 ms of audio to commit",
                code="input_audio_buffer_commit_empty",
            )
            await self._send(error_event(error))
            return
        if turn is None:
            turn = Turn(item_id=self._next_item(), start=start, previous_item_id=self._previous_item)
        self._open = None
        turn.end = self.recording.total
        self._detector = self._new_detector(frames_seen=self._detector.frames_seen)
        await self._committed(turn)

    async def _committed(self, turn: Turn) -> None:
        assert turn.end is not None
        self.load.first_waiting.pop(turn.item_id, None)
        self._buffer_start = turn.end
        self._previous_item = turn.item_id
        await self._emit("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=turn.previous_item_id)
        item = _user_item(turn.item_id, None)
        if self.config.schema == "beta":
            await self._emit("conversation.item.created", previous_item_id=turn.previous_item_id, item=item)
        else:
            await self._emit("conversation.item.added", previous_item_id=turn.previous_item_id, item=item)
        turn.committed_at = time.monotonic()  # type: ignore[attr-defined]
        self._finals.put_nowait(turn)
        self._wake.set()

    async def _clear(self) -> None:
        if self._open is not None:
            self.load.first_waiting.pop(self._open.item_id, None)
        self._open = None
        self._buffer_start = self.recording.total
        self._detector = self._new_detector(frames_seen=self._detector.frames_seen)
        await self._emit("input_audio_buffer.cleared")

    # --- decoding

    async def run(self) -> None:
        """Decode until the session is closed and every committed turn is done: finals in the order the
        turns were committed, partials of the open turn beside them (a final never waits for a partial)."""
        await asyncio.gather(self._run_finals(), self._run_partials())

    async def _run_finals(self) -> None:
        while (turn := await self._finals.get()) is not None:
            await self._final(turn)

    async def _run_partials(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            turn = self._open
            if turn is not None and turn.early is None and self._partial_due(turn):
                try:
                    await self._partial(turn)
                except Exception:
                    # Partial words are a courtesy: a failed decode leaves them to the next one and the final.
                    log.exception("partial decode failed", extra={"action": "live_partial_failed"})

    async def close(self) -> None:
        """No more audio: an open turn is committed as it stands (what was heard is kept), then the
        remaining finals are decoded."""
        if self._open is not None and self.recording.total - self._open.start >= MIN_COMMIT_SAMPLES:
            turn, self._open = self._open, None
            self.load.first_waiting.pop(turn.item_id, None)
            turn.end = self.recording.total
            self._buffer_start = turn.end
            self._previous_item = turn.item_id
            self._finals.put_nowait(turn)
        self._closing = True
        self._finals.put_nowait(None)
        self._wake.set()

    async def _partial(self, turn: Turn) -> None:
        now, first = time.monotonic(), not turn.agreement.confirmed
        slots = self.limits.max_partials + (self.limits.first_words_partials if first else 0)
        busy = self.load.in_flight >= self.limits.busy_decodes or self.load.partials >= slots
        if busy or (not first and self.load.first_words_waiting(besides=turn.item_id, now=now)):
            self.partials_skipped += 1
            LIVE_PARTIALS_SKIPPED.inc()
            if first:
                self.load.first_waiting.setdefault(turn.item_id, now)
            self.load.skipped.add(self._wake)
            return  # under load partials go first; a turn with words out gives way to one waiting for its first
        self.load.first_waiting.pop(turn.item_id, None)
        end = self.recording.total
        audio = self.recording.window(turn.start, end)
        turn.decoded_to = end
        self.load.partials += 1
        try:
            prompt = self._prompt() if len(audio) >= self.limits.prompted_partial_seconds * SAMPLE_RATE else None
            found: PartialDecode = await self._decode(
                self._decoder.partial, audio, language=self._language(turn), prompt=prompt
            )
        finally:
            self.load.partials -= 1

        turn.language = turn.language or found.language
        if self._open is not turn or turn.early is not None:
            return  # the turn ended or paused while this decode ran: its final decode goes on from what was sent
        agreed = turn.agreement.update(found.words, ends=found.ends, heard=len(audio) / SAMPLE_RATE)
        if agreed and self._redact is None:  # masked text goes out whole, with the turn's final
            await self._emit(
                "conversation.item.input_audio_transcription.delta",
                item_id=turn.item_id,
                content_index=0,
                delta="".join(agreed),
            )

    async def _final_decode(self, turn: Turn, end: int) -> FinalDecode:
        audio = self.recording.window(turn.start, end)
        found: FinalDecode = await self._decode(
            self._decoder.final,
            audio,
            language=self._language(turn),
            prompt=self._prompt(),
            prefix=turn.agreement.text.strip() or None,
        )
        return found

    def has_speech(self, start: int, end: int) -> bool:
        """Whether VAD heard speech between these samples (a turn of silence is not decoded: Whisper
        would make words up)."""
        threshold = self.config.turn_detection.threshold if self.config.turn_detection else 0.5
        first, last = start // FRAME_SAMPLES, max(start // FRAME_SAMPLES + 1, -(-end // FRAME_SAMPLES))
        return any(probability >= threshold for probability in self._speech[first:last])

    async def _final(self, turn: Turn) -> None:
        assert turn.end is not None
        if not self.has_speech(turn.start, turn.end):
            await self._finish_silent(turn)
            return
        confirmed = turn.agreement.confirmed
        try:
            # A decode started at the pause that ended the turn heard all of its speech: no second one.
            early = turn.early
            found = await early if early is not None else await self._final_decode(turn, turn.end)
        except Exception as error:
            log.exception("live turn failed", extra={"action": "live_turn_failed", "item_id": turn.item_id})
            await self._emit(
                "conversation.item.input_audio_transcription.failed",
                item_id=turn.item_id,
                content_index=0,
                error={"type": "server_error", "code": "transcription_failed", "message": str(error), "param": None},
            )
            return
        sent = words_after(found.words, "".join(confirmed))
        repeated = repeated_after(found.words[sent:], "".join(confirmed))
        words = found.words[:sent] + found.words[sent + repeated :]
        remainder = "".join(word.word for word in words[sent:])
        transcript = "".join(confirmed) + remainder
        offset = turn.start / SAMPLE_RATE
        timed = [
            {
                "word": word.word,
                "start": round(offset + word.start, 3),
                "end": round(offset + word.end, 3),
                "probability": round(word.probability, 4),
            }
            for word in words
        ]
        # Confirmed words keep their spelling as sent, where the final decode split them alike; it gives
        # their times.
        if sent == len(confirmed):
            for index, text in enumerate(confirmed[: len(timed)]):
                timed[index]["word"] = text
        language = found.language or turn.language
        shown, shown_words = transcript, timed
        if self._redact is not None:
            shown, shown_words = await asyncio.to_thread(self._redact, transcript, timed, language)
            remainder = shown
        if remainder:
            await self._emit(
                "conversation.item.input_audio_transcription.delta",
                item_id=turn.item_id,
                content_index=0,
                delta=remainder,
            )
        completed = CompletedTurn(
            turn.item_id, round(offset, 3), round(turn.end / SAMPLE_RATE, 3), transcript.strip(), timed, language
        )
        self.completed.append(completed)
        extra: dict[str, Any] = {}
        if self.config.logprobs:
            extra["logprobs"] = [
                {
                    "token": str(w["word"]),
                    "logprob": math.log(max(float(w["probability"] or 0.0), 1e-9)),  # type: ignore[arg-type]
                    "bytes": list(str(w["word"]).encode()),
                }
                for w in shown_words
            ]
        await self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=turn.item_id,
            content_index=0,
            transcript=shown,
            usage={"type": "duration", "seconds": round((turn.end - turn.start) / SAMPLE_RATE, 3)},
            words=shown_words,
            language=iso639_3(language),
            **extra,
        )
        await self._item_done(turn, shown)
        committed_at = getattr(turn, "committed_at", None)
        if committed_at is not None:
            self.turn_latencies.append(time.monotonic() - committed_at)
            LIVE_TURN_LATENCY.observe(self.turn_latencies[-1])
        self._trim()

    async def _finish_silent(self, turn: Turn) -> None:
        """A committed turn with no speech in it: an empty transcript, as OpenAI answers one."""
        assert turn.end is not None
        await self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=turn.item_id,
            content_index=0,
            transcript="",
            usage={"type": "duration", "seconds": round((turn.end - turn.start) / SAMPLE_RATE, 3)},
            words=[],
            language=None,
        )
        await self._item_done(turn, "")

    async def _item_done(self, turn: Turn, transcript: str) -> None:
        if self.config.schema == "ga":  # the beta schema has no such event
            item = _user_item(turn.item_id, transcript)
            await self._emit("conversation.item.done", previous_item_id=turn.previous_item_id, item=item)

    async def _decode(self, function: Callable[..., Any], audio: npt.NDArray[np.float32], **options: Any) -> Any:
        self.load.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: function(audio, **options))
        finally:
            self.load.in_flight -= 1
            self.load.decode_ended()

    # --- helpers

    def _partial_due(self, turn: Turn) -> bool:
        return partial_due(
            self.limits,
            heard=(self.recording.total - turn.start) / SAMPLE_RATE,
            fresh=(self.recording.total - turn.decoded_to) / SAMPLE_RATE,
            confirmed=bool(turn.agreement.confirmed),
        )

    def _language(self, turn: Turn) -> str | None:
        return self.config.language or turn.language

    def _prompt(self) -> str | None:
        previous = " ".join(turn.text for turn in self.completed)[-PROMPT_CHARACTERS:]
        parts = [part for part in (self.config.prompt, previous) if part]
        return " ".join(parts) or None

    def _next_item(self) -> str:
        self._items += 1
        return f"item_{self.id[-12:]}_{self._items:04d}"

    def _new_detector(self, frames_seen: int = 0) -> TurnDetector:
        detection = self.config.turn_detection
        detector = TurnDetector(max_turn_seconds=self.limits.max_turn_seconds)
        if detection is not None:
            detector.threshold = detection.threshold
            detector.prefix_padding_ms = detection.prefix_padding_ms
            detector.silence_duration_ms = detection.silence_duration_ms
        # The final decode starts this far into a pause (a turn's final takes about 0.5 s on 2 cores): late
        # enough that the short pauses inside a sentence rarely start one in vain.
        detector.early_final_ms = max(160, detector.silence_duration_ms * 3 // 5)
        detector.frames_seen = frames_seen
        return detector

    def _trim(self) -> None:
        keep = self._buffer_start if self._open is None else min(self._open.start, self._buffer_start)
        pending = [turn.start for turn in list(self._finals._queue) if turn is not None]  # type: ignore[attr-defined]
        keep = min([keep, *pending])
        self.recording.forget_before(max(0, keep - SAMPLE_RATE))

    async def _emit(self, kind: str, **fields: Any) -> None:
        await self._send({"type": kind, "event_id": event_id(), **fields})


def _user_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    """The conversation item of a turn, as the Realtime API shows a user's audio message."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }
