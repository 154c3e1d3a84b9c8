"""A live session's events (gpu_worker/realtime/session.py) with the real VAD on real speech and a decoder
that reads from the reference text (the test double): turns, deltas that add up, manual commits, clears,
bad events, and what the session keeps for its job."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_worker.realtime.protocol import SessionConfig
from gpu_worker.realtime.session import LiveSession
from gpu_worker.realtime.turns import FinalDecode, PartialDecode, Word

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "en"
RATE = 16000


class ReadingDecoder:
    """Decodes by reading: a partial gives the reference's words heard so far (2.5 words a second, the
    last one misheard while the reading goes on), the final gives them all, continuing `prefix`."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.prefixes: list[str | None] = []
        self.finals = 0

    def partial(self, audio: np.ndarray, *, language: str | None, prompt: str | None) -> PartialDecode:
        heard = int(len(audio) / RATE * 2.5)
        words = [*self.words[: max(0, heard - 1)], " mumble"] if 0 < heard <= len(self.words) else self.words[:heard]
        return PartialDecode(words, [(index + 1) / 2.5 for index in range(len(words))], "en")

    def final(self, audio: np.ndarray, *, language: str | None, prompt: str | None, prefix: str | None) -> FinalDecode:
        self.finals += 1
        self.prefixes.append(prefix)
        step = len(audio) / RATE / max(1, len(self.words))
        return FinalDecode(
            words=[Word(word, i * step, (i + 1) * step, 0.9) for i, word in enumerate(self.words)], language="en"
        )


def speech(name: str) -> tuple[bytes, list[str]]:
    """PCM16 at 16 kHz: silence, the clip, silence; and the clip's reference words."""
    from shared.engines.audio import decode

    clip = decode(AUDIO / f"{name}.wav")
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), clip, np.zeros(RATE, np.float32)])
    words = [" " + word for word in (AUDIO / f"{name}.txt").read_text().split()]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), words


def append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


async def run_session(
    tmp_path: Path,
    decoder: ReadingDecoder,
    messages: list[str],
    *,
    config: SessionConfig | None = None,
    after_each: Callable[[LiveSession], object] | None = None,
    pause: float = 0.0,
    **options: Any,
) -> tuple[list[dict[str, Any]], LiveSession]:
    """Feed the messages to a session as its socket would, then close it; its events and the session.
    `options` go to LiveSession (limits, load); `after_each` sees the session after every message;
    `pause` seconds between messages give the decode threads their turn even on a busy machine."""
    events: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        events.append(event)

    with ThreadPoolExecutor(2) as executor:
        session = LiveSession(
            session_id="00000000-0000-0000-0000-0000000000aa",
            send=send,
            decoder=decoder,
            executor=executor,
            recording=tmp_path / "live.wav",
            config=config or SessionConfig(rate=RATE),
            **options,
        )
        await session.start()
        decoding = asyncio.create_task(session.run())
        try:
            for message in messages:
                await session.receive(message)
                if after_each is not None:
                    after_each(session)
                await asyncio.sleep(pause)  # let decodes interleave as on a socket
        finally:
            await session.close()
            await decoding
            session.recording.close()
    return events, session


def chunks(pcm: bytes, milliseconds: int = 100) -> list[str]:
    size = RATE * 2 * milliseconds // 1000
    return [append(pcm[at : at + size]) for at in range(0, len(pcm), size)]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def test_server_vad_turns_send_deltas_that_add_up_to_the_completed_transcript(tmp_path: Path) -> None:
    first, first_words = speech("librivox-0870")
    second, second_words = speech("librivox-0880")
    decoder = ReadingDecoder(first_words)
    events, session = asyncio.run(run_session(tmp_path, decoder, chunks(first), pause=0.02))

    assert events[0]["type"] == "session.created" and events[0]["session"]["id"] == session.id
    started = of_type(events, "input_audio_buffer.speech_started")
    stopped = of_type(events, "input_audio_buffer.speech_stopped")
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert len(started) == len(stopped) == len(completed) == 1
    item = completed[0]["item_id"]
    assert started[0]["item_id"] == stopped[0]["item_id"] == item
    assert 0 < started[0]["audio_start_ms"] < 600 < stopped[0]["audio_end_ms"]
    deltas = [e["delta"] for e in of_type(events, "conversation.item.input_audio_transcription.delta")]
    assert len(deltas) >= 2, "partial words came before the final"
    assert "".join(deltas) == completed[0]["transcript"] == "".join(first_words)
    assert " mumble" not in "".join(deltas)  # a word the decodes did not agree on is never sent
    order = [e["type"] for e in events]
    assert order.index("input_audio_buffer.committed") < order.index("conversation.item.added")
    assert order.index("conversation.item.input_audio_transcription.completed") < order.index("conversation.item.done")
    words = completed[0]["words"]
    assert [w["word"] for w in words] == first_words
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(words))
    assert completed[0]["usage"]["type"] == "duration" and completed[0]["usage"]["seconds"] > 6
    assert completed[0]["language"] == "eng"
    # The final continued the words already sent.
    assert decoder.prefixes[-1] == "".join(deltas[:-1]).strip()
    assert session.completed[0].text == "".join(first_words).strip()
    assert session.recording.total == len(first) // 2
    del second, second_words


class SplittingDecoder(ReadingDecoder):
    """As faster-whisper's word timings do, the final splits a hyphenated word the partials kept whole."""

    def final(self, audio: np.ndarray, *, language: str | None, prompt: str | None, prefix: str | None) -> FinalDecode:
        found = super().final(audio, language=language, prompt=prompt, prefix=prefix)
        split: list[Word] = []
        for word in found.words:
            head, hyphen, tail = word.word.partition("-")
            if hyphen:
                middle = (word.start + word.end) / 2
                split += [Word(head, word.start, middle, 0.9), Word(hyphen + tail, middle, word.end, 0.9)]
            else:
                split.append(word)
        return FinalDecode(words=split, language=found.language)


def test_a_word_the_final_splits_in_two_is_not_sent_twice(tmp_path: Path) -> None:
    # Seen on an AVX-512 CPU: "... cold-hearted and rather selfish is to be ill-disposed. ill-disposed." —
    # the words already sent were counted as the final's first words, and the final had one more of them.
    pcm, words = speech("librivox-0890")
    for first, second in ((" cold", " hearted"), (" ill", " disposed")):
        at = words.index(first)
        words[at : at + 2] = [first + "-" + second.strip()]
    events, _ = asyncio.run(run_session(tmp_path, SplittingDecoder(words), chunks(pcm)))

    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    deltas = [e["delta"] for e in of_type(events, "conversation.item.input_audio_transcription.delta")]
    assert len(deltas) >= 2, "some words were sent before the final"
    assert completed[0]["transcript"] == "".join(words) == "".join(deltas)
    assert "".join(w["word"] for w in completed[0]["words"]) == "".join(words)


def test_a_manual_commit_transcribes_the_buffer_and_an_empty_one_is_an_error(tmp_path: Path) -> None:
    pcm, words = speech("librivox-0880")
    manual = SessionConfig(rate=RATE, turn_detection=None)
    commit = json.dumps({"type": "input_audio_buffer.commit", "event_id": "c1"})
    events, _ = asyncio.run(run_session(tmp_path, ReadingDecoder(words), [commit, *chunks(pcm), commit], config=manual))

    errors = of_type(events, "error")
    assert [e["error"]["code"] for e in errors] == ["input_audio_buffer_commit_empty"]
    assert not of_type(events, "input_audio_buffer.speech_started")  # no server VAD
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert len(completed) == 1 and completed[0]["transcript"] == "".join(words)
    deltas = of_type(events, "conversation.item.input_audio_transcription.delta")
    assert "".join(d["delta"] for d in deltas) == completed[0]["transcript"]


def test_clear_drops_the_buffer_and_bad_events_leave_the_session_going(tmp_path: Path) -> None:
    pcm, words = speech("librivox-0880")
    manual = SessionConfig(rate=RATE, turn_detection=None)
    half = chunks(pcm)[: len(chunks(pcm)) // 2]
    messages = [
        "{nope",
        json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
        json.dumps({"type": "conversation.item.create"}),
        *half,
        json.dumps({"type": "input_audio_buffer.clear"}),
        json.dumps({"type": "input_audio_buffer.commit"}),
        *chunks(pcm),
        json.dumps({"type": "input_audio_buffer.commit"}),
    ]
    events, session = asyncio.run(run_session(tmp_path, ReadingDecoder(words), messages, config=manual))

    codes = [e["error"]["code"] for e in of_type(events, "error")]
    assert codes == ["invalid_json", "invalid_base64", "invalid_event", "input_audio_buffer_commit_empty"]
    assert len(of_type(events, "input_audio_buffer.cleared")) == 1
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert len(completed) == 1
    # The turn is the audio sent after the clear, not before it.
    (turn,) = session.completed
    assert turn.start == pytest.approx(len(b"".join(base64.b64decode(json.loads(m)["audio"]) for m in half)) / 2 / RATE)


def test_the_beta_schema_answers_in_beta_events(tmp_path: Path) -> None:
    pcm, words = speech("librivox-0880")
    update = json.dumps(
        {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16", "turn_detection": None}}
    )
    commit = json.dumps({"type": "input_audio_buffer.commit"})
    events, _ = asyncio.run(run_session(tmp_path, ReadingDecoder(words), [update, *chunks(pcm), commit]))
    kinds = [e["type"] for e in events]
    assert "transcription_session.updated" in kinds and "conversation.item.created" in kinds
    assert "conversation.item.added" not in kinds


def test_a_closed_session_keeps_the_turn_it_was_in(tmp_path: Path) -> None:
    """A client that goes away mid-turn: what was heard is committed and transcribed for the job."""
    pcm, words = speech("librivox-0870")
    cut = chunks(pcm)[:40]  # 4 s: mid-sentence, no silence yet
    events, session = asyncio.run(run_session(tmp_path, ReadingDecoder(words), cut))

    assert len(session.completed) == 1
    assert of_type(events, "conversation.item.input_audio_transcription.completed")
    assert session.recording.path.stat().st_size > 4 * RATE * 2


class SlowDecoder(ReadingDecoder):
    """Finals that take 0.3 s each: a client streaming faster than that builds a backlog."""

    def final(self, audio: np.ndarray, *, language: str | None, prompt: str | None, prefix: str | None) -> FinalDecode:
        import time

        time.sleep(0.3)
        return super().final(audio, language=language, prompt=prompt, prefix=prefix)


def test_under_load_partials_go_first_and_every_final_still_comes(tmp_path: Path) -> None:
    from gpu_worker.realtime.turns import DecodeLoad

    pcm, words = speech("librivox-0870")
    # Other sessions' partials hold both partial slots, the one for a turn's first words too.
    busy = DecodeLoad(in_flight=0, partials=2)
    events, session = asyncio.run(run_session(tmp_path, ReadingDecoder(words), chunks(pcm), load=busy))

    assert session.partials_skipped > 0
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    deltas = of_type(events, "conversation.item.input_audio_transcription.delta")
    assert len(completed) == 1 and len(deltas) == 1  # no partial words: the whole turn with its final
    assert deltas[0]["delta"] == completed[0]["transcript"] == "".join(words)

    # With one slot held, the turn's first words still take the other; the words after them wait.
    events, session = asyncio.run(
        run_session(tmp_path, ReadingDecoder(words), chunks(pcm), load=DecodeLoad(in_flight=0, partials=1))
    )
    deltas = of_type(events, "conversation.item.input_audio_transcription.delta")
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert len(deltas) == 2 and session.partials_skipped > 0
    assert "".join(delta["delta"] for delta in deltas) == completed[0]["transcript"] == "".join(words)


def test_partials_of_a_turn_with_words_out_give_way_to_a_turn_waiting_for_its_first(tmp_path: Path) -> None:
    import time

    from gpu_worker.realtime.turns import DecodeLoad

    pcm, words = speech("librivox-0870")
    # Another session's turn waits for its first words the whole time (it never stops waiting).
    waiting = DecodeLoad(first_waiting={"item_elsewhere": time.monotonic() + 3600})
    events, session = asyncio.run(run_session(tmp_path, ReadingDecoder(words), chunks(pcm), load=waiting))

    deltas = [e["delta"] for e in of_type(events, "conversation.item.input_audio_transcription.delta")]
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    # This turn's first words still came early (it waited for its first too); then nothing until its final.
    assert len(deltas) == 2 and deltas[0].split() == [word.strip() for word in words[: len(deltas[0].split())]]
    assert session.partials_skipped > 0
    assert "".join(deltas) == completed[0]["transcript"] == "".join(words)
    assert set(waiting.first_waiting) == {"item_elsewhere"}  # the turn, once over, holds no place


class PromptNotingDecoder(ReadingDecoder):
    """Notes the audio length (seconds) and the prompt of each partial decode."""

    def __init__(self, words: list[str]) -> None:
        super().__init__(words)
        self.partials: list[tuple[float, str | None]] = []

    def partial(self, audio: np.ndarray, *, language: str | None, prompt: str | None) -> PartialDecode:
        self.partials.append((len(audio) / RATE, prompt))
        return super().partial(audio, language=language, prompt=prompt)


def test_a_turn_is_first_decoded_0_6_s_in_and_without_the_prompt_under_0_9_s(tmp_path: Path) -> None:
    pcm, words = speech("librivox-0890")
    decoder = PromptNotingDecoder(words)
    config = SessionConfig(rate=RATE, prompt="Sense and Sensibility, chapter two.")
    asyncio.run(run_session(tmp_path, decoder, chunks(pcm), config=config))

    heard = [seconds for seconds, _ in decoder.partials]
    assert 0.6 <= heard[0] < 0.7
    assert all(prompt is None for seconds, prompt in decoder.partials if seconds < 0.9)
    assert all(prompt == config.prompt for seconds, prompt in decoder.partials if seconds >= 0.9)
    assert any(seconds >= 0.9 for seconds in heard)


class RestartingDecoder(ReadingDecoder):
    """A final that, given the words already sent, says them and then starts the turn over."""

    def final(self, audio: np.ndarray, *, language: str | None, prompt: str | None, prefix: str | None) -> FinalDecode:
        found = super().final(audio, language=language, prompt=prompt, prefix=prefix)
        said = [Word(" " + word, 0.0, 0.1, 0.9) for word in (prefix or "").split()]
        return FinalDecode(words=said + found.words, language=found.language)


def test_a_final_that_starts_the_turn_over_does_not_repeat_the_words_sent(tmp_path: Path) -> None:
    pcm, words = speech("librivox-0880")
    decoder = RestartingDecoder(words)
    # Paced, so that partials have sent words before the final whatever else the machine is doing.
    events, _ = asyncio.run(run_session(tmp_path, decoder, chunks(pcm), pause=0.02))

    deltas = [e["delta"] for e in of_type(events, "conversation.item.input_audio_transcription.delta")]
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert decoder.prefixes[-1], "words were sent before the final"
    assert "".join(deltas) == completed[0]["transcript"] == "".join(words)
    assert [w["word"] for w in completed[0]["words"]] == words


def test_a_client_faster_than_real_time_waits_and_the_backlog_stays_bounded(tmp_path: Path) -> None:
    from gpu_worker.realtime.turns import Limits

    pcm, words = speech("librivox-0880")  # about 4.5 s of audio a turn
    manual = SessionConfig(rate=RATE, turn_detection=None)
    commit = json.dumps({"type": "input_audio_buffer.commit"})
    messages = [message for _ in range(6) for message in [*chunks(pcm, 500), commit]]
    backlog: list[float] = []

    _, session = asyncio.run(
        run_session(
            tmp_path,
            SlowDecoder(words),
            messages,  # as fast as the client can send
            config=manual,
            limits=Limits(max_backlog_seconds=6.0),
            after_each=lambda live: backlog.append(live.backlog_seconds()),
        )
    )

    assert len(session.completed) == 6
    # Six turns arrive at once; the session never holds much more than its limit waiting for finals.
    assert max(backlog) <= 6.0 + 5.0
    assert max(backlog) > 4.0


def test_a_session_past_its_longest_length_is_over(tmp_path: Path) -> None:
    from gpu_worker.realtime.turns import Limits, SessionOver

    pcm, words = speech("librivox-0880")
    with pytest.raises(SessionOver):
        asyncio.run(run_session(tmp_path, ReadingDecoder(words), chunks(pcm), limits=Limits(max_session_seconds=2.0)))
