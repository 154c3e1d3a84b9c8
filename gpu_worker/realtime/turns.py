"""The parts of a live session (gpu_worker/realtime/session.py): its turns and what their decodes
return, the decoder it talks to, its limits, and its recording — the session's audio on disk, and the
recent part of it in memory."""

from __future__ import annotations

import asyncio
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.domain.languages import to_iso639_3
from shared.engines.speech.streaming import SAMPLE_RATE, LocalAgreement, normalise


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class PartialDecode:
    words: list[str]
    """As `words_of` splits text: each with its leading space."""
    ends: list[float]
    """Where each word ends, seconds from the turn's start."""
    language: str


@dataclass(frozen=True)
class FinalDecode:
    words: list[Word]
    language: str | None


def words_after(words: list[Word], sent: str) -> int:
    """How many of a final decode's words spell out the text already sent as deltas; the rest are new.

    Counted by characters, not words: the final decode goes on from the sent text (its prefix), but its
    word timings split words the partial decodes kept whole (" ill-disposed" comes back as " ill" and
    "-disposed"), so the n-th word of one is not the n-th of the other."""
    wanted = len("".join(sent.split()))
    covered = 0
    for index, word in enumerate(words):
        if covered >= wanted:
            return index
        covered += len("".join(word.word.split()))
    return len(words)


def repeated_after(words: list[Word], sent: str) -> int:
    """How many of a final decode's new words (those past the sent text) only say the sent text again.

    A final decode goes on from the sent words, and now and then Whisper starts the turn over instead
    ("He was not. He was not an ill-disposed young man."): those words would be sent twice. Compared by
    characters, case and punctuation aside, as `words_after` counts them."""
    wanted = "".join(normalise(word) for word in sent.split())
    said = ""
    for index, word in enumerate(words):
        said += normalise(word.word)
        if not wanted.startswith(said):
            return 0
        if said == wanted:
            return index + 1
    return 0


class TurnDecoder(Protocol):
    """Decodes a turn's audio (16 kHz mono float32): partial hypotheses and the final transcript."""

    def partial(self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None) -> PartialDecode:
        """The words of a quick decode, where they end, and the language it was decoded in."""
        ...

    def final(
        self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None, prefix: str | None
    ) -> FinalDecode:
        """Words with times (seconds from the turn's start) and probabilities, continuing `prefix`."""
        ...


@dataclass
class Limits:
    first_partial_seconds: float = 0.6
    """A turn's first partial decode, this far into the turn (its 0.3 s of padding included)."""
    unconfirmed_every_seconds: float = 0.3
    """Partial decodes this often until the turn has a confirmed word: its first words come from two
    decodes 0.3 s apart (those of short audio cost little), the rest from decodes `partial_every_seconds`
    apart."""
    partial_every_seconds: float = 0.6
    max_session_seconds: float = 3600.0
    max_turn_seconds: float = 25.0
    busy_decodes: int = 4
    """With this many decodes of the process waiting or running, partials are skipped (finals never)."""
    max_partials: int = 1
    """Partial decodes the process runs at once: the other decode threads stay free for finals."""
    first_words_partials: int = 1
    """As many more for turns with no word out yet: those may take a thread kept for finals (a partial
    decode of a second or two of audio takes about 0.1 s on 2 cores, all a final then waits)."""
    prompted_partial_seconds: float = 0.9
    """Partial decodes of less of the turn go without the prompt: on so little audio Whisper may say the
    prompt again, and two such decodes agree on it."""
    max_backlog_seconds: float = 60.0
    """Audio heard but not yet finally transcribed, at most: past it the session stops reading the socket
    until its finals catch up (a client sending faster than real time waits; memory stays bounded)."""


def partial_due(limits: Limits, *, heard: float, fresh: float, confirmed: bool) -> bool:
    """Whether the open turn is due a partial decode: `heard` seconds into it, `fresh` seconds of it not
    yet heard by a partial decode, and words of it `confirmed` already or not."""
    every = limits.partial_every_seconds if confirmed else limits.unconfirmed_every_seconds
    return heard >= limits.first_partial_seconds and fresh >= every


FIRST_WORDS_WAIT_SECONDS = 1.0


@dataclass
class DecodeLoad:
    """The decodes a live worker has waiting or running, over all its sessions."""

    in_flight: int = 0
    partials: int = 0
    first_waiting: dict[str, float] = field(default_factory=dict)
    """Open turns with no word confirmed yet whose partial decode was skipped under load (item id → since
    when, monotonic): the next partial slot is theirs, before turns that have words out already."""

    skipped: set[asyncio.Event] = field(default_factory=set)
    """The wake-ups of sessions whose partial decode was skipped: set when a decode ends, so that they try
    again then rather than at their next audio (up to 100 ms later)."""

    def decode_ended(self) -> None:
        for wake in self.skipped:
            wake.set()
        self.skipped.clear()

    def first_words_waiting(self, *, besides: str, now: float) -> bool:
        """Whether another turn waits for its first words. A turn holds its place for a second at most: one
        whose session went away without a word is forgotten."""
        for item, since in list(self.first_waiting.items()):
            if now - since > FIRST_WORDS_WAIT_SECONDS:
                del self.first_waiting[item]
        return any(item != besides for item in self.first_waiting)


@dataclass
class Turn:
    item_id: str
    start: int
    """Samples from the session's start."""
    previous_item_id: str | None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    language: str | None = None
    end: int | None = None
    decoded_to: int = 0
    """Samples heard by the last partial decode."""
    early: asyncio.Task[FinalDecode] | None = None
    """The final decode started at a pause that may end the turn (dropped if speech resumes)."""


@dataclass
class CompletedTurn:
    item_id: str
    start: float
    end: float
    text: str
    words: list[dict[str, Any]]
    language: str | None


class Recording:
    """The session's audio: a 16 kHz PCM16 WAV on disk (what the job keeps), and the recent part in memory
    (what open and pending turns still need)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self.total = 0
        self._recent = np.zeros(0, dtype=np.float32)
        self._recent_start = 0

    def add(self, samples: npt.NDArray[np.float32]) -> None:
        if samples.size == 0:
            return
        self._wav.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
        self._recent = np.concatenate([self._recent, samples])
        self.total += samples.size

    def window(self, start: int, end: int) -> npt.NDArray[np.float32]:
        begin = max(start, self._recent_start) - self._recent_start
        return self._recent[begin : max(begin, end - self._recent_start)].copy()

    def forget_before(self, sample: int) -> None:
        drop = min(sample, self.total) - self._recent_start
        if drop > 0:
            self._recent = self._recent[drop:]
            self._recent_start += drop

    def close(self) -> None:
        self._wav.close()


class SessionOver(Exception):
    """The session may take no more audio (its longest length)."""


def iso639_3(language: str | None) -> str | None:
    """A turn's language as SpeechFlow reports languages (ISO 639-3), or as Whisper named it."""
    if language is None:
        return None
    try:
        return to_iso639_3(language)
    except Exception:
        return language
