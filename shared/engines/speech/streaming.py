"""Live transcription's engine: audio in as it arrives, turns out, and words that are never taken back.

- `AudioInput` turns what a client streams (PCM16 at any rate, G.711 μ-law or A-law at 8 kHz) into
  16 kHz mono float32 with PyAV's codecs and resampler, chunk by chunk.
- `StreamingVad` gives Silero VAD's speech probability (the model faster-whisper ships) for each 32 ms
  frame as the audio arrives, carrying the model's state from frame to frame.
- `TurnDetector` is server-side turn detection as OpenAI's `server_vad` describes it: speech starts at
  the first frame over `threshold` (reported `prefix_padding_ms` earlier), stops after
  `silence_duration_ms` under it; a turn about to pass `max_turn_seconds` is cut at its quietest frame.
- `LocalAgreement` is the policy of whisper_streaming (Macháček et al., 2023, "Turning Whisper into
  Real-Time Transcription System"): the open turn is decoded again as audio arrives, and the words that
  two successive decodes agree on, past those already confirmed, are confirmed — sent as deltas, never
  taken back; not a word the newer decode hears cut off, nor one it places past the audio the older
  decode heard. The final decode of a turn continues from the confirmed words (faster-whisper's `prefix`),
  so what it adds completes them.

No sockets here: shared/realtime drives it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
"""Silero VAD's frame at 16 kHz: 32 ms."""
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE
CONTEXT_SAMPLES = 64

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]


class AudioInput:
    """One client's audio stream, converted to 16 kHz mono float32 as it arrives."""

    def __init__(self, audio_format: AudioFormat = "pcm16", rate: int = 24000) -> None:
        import av

        self.format = audio_format
        self.rate = 8000 if audio_format != "pcm16" else rate
        self._codec: Any = None
        if audio_format != "pcm16":
            self._codec = av.CodecContext.create("pcm_mulaw" if audio_format == "g711_ulaw" else "pcm_alaw", "r")
            self._codec.sample_rate = 8000
            self._codec.layout = "mono"
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._odd_byte = b""

    def convert(self, data: bytes) -> npt.NDArray[np.float32]:
        """The 16 kHz samples of these bytes (a resampler may hold a few back until the next call)."""
        import av

        if self._codec is not None:
            frames = list(self._codec.decode(av.Packet(data))) if data else []
        else:
            data = self._odd_byte + data
            cut = len(data) - len(data) % 2
            self._odd_byte = data[cut:]
            pcm = np.frombuffer(data[:cut], dtype="<i2")
            if pcm.size == 0:
                return np.zeros(0, dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.rate
            frames = [frame]
        out = [piece for frame in frames for piece in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([piece.to_ndarray().reshape(-1) for piece in out]).astype(np.float32, copy=False)


class StreamingVad:
    """Silero VAD over a stream: the speech probability of each complete 32 ms frame, in order."""

    def __init__(self, model: Any = None) -> None:
        if model is None:
            from faster_whisper.vad import get_vad_model

            model = get_vad_model()
        self._session = model.session
        self._state = np.zeros((1, 1, 128), dtype=np.float32), np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, samples: npt.NDArray[np.float32]) -> list[float]:
        self._pending = np.concatenate([self._pending, samples])
        count = len(self._pending) // FRAME_SAMPLES
        if count == 0:
            return []
        frames = self._pending[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self._pending = self._pending[count * FRAME_SAMPLES :]
        found: list[float] = []
        h, c = self._state
        for frame in frames:
            window = np.concatenate([self._context, frame]).reshape(1, -1)
            output, h, c = self._session.run(None, {"input": window, "h": h, "c": c})
            found.append(float(np.asarray(output).reshape(-1)[0]))
            self._context = frame[-CONTEXT_SAMPLES:]
        self._state = (h, c)
        return found


@dataclass
class TurnEvent:
    kind: Literal["speech_started", "speech_stopped", "speech_paused", "speech_resumed"]
    at_ms: int
    """speech_started: where the turn's audio begins (padding included); speech_stopped: where it ends;
    speech_paused: where the speech of a pause that may end the turn stopped (`early_final_ms` into the
    pause, so that a turn's final decode can start before the silence is long enough to end it);
    speech_resumed: speech again before the pause ended the turn."""
    cut: bool = False
    """The turn reached its longest and was cut at a pause rather than ended by silence."""


@dataclass
class TurnDetector:
    """Server-side turn detection over VAD frame probabilities (times in ms from the stream's start)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    max_turn_seconds: float = 25.0
    early_final_ms: int = 160
    frames_seen: int = 0
    paused: bool = False
    in_speech: bool = False
    turn_start_ms: int = 0
    last_speech_ms: int = 0
    _quiet: list[tuple[float, int]] = field(default_factory=list)
    """(probability, frame end ms) of the open turn's frames, to find a pause to cut at."""

    def feed(self, probabilities: Iterable[float]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        release = max(0.0, self.threshold - 0.15)
        for probability in probabilities:
            start_ms = self.frames_seen * FRAME_MS
            self.frames_seen += 1
            end_ms = self.frames_seen * FRAME_MS
            if not self.in_speech:
                if probability >= self.threshold:
                    self.in_speech = True
                    self.turn_start_ms = max(0, start_ms - self.prefix_padding_ms)
                    self.last_speech_ms = end_ms
                    self._quiet = []
                    events.append(TurnEvent("speech_started", self.turn_start_ms))
                continue
            self._quiet.append((probability, end_ms))
            if probability >= release:
                self.last_speech_ms = end_ms
                if self.paused:
                    self.paused = False
                    events.append(TurnEvent("speech_resumed", end_ms))
            elif not self.paused and end_ms - self.last_speech_ms >= min(self.early_final_ms, self.silence_duration_ms):
                self.paused = True
                events.append(TurnEvent("speech_paused", self.last_speech_ms))
            if end_ms - self.last_speech_ms >= self.silence_duration_ms:
                self.in_speech = False
                self.paused = False
                events.append(TurnEvent("speech_stopped", end_ms))
            elif end_ms - self.turn_start_ms >= self.max_turn_seconds * 1000:
                cut_ms = self._pause_to_cut_at()
                if self.paused:
                    self.paused = False
                    events.append(TurnEvent("speech_resumed", end_ms))
                events.append(TurnEvent("speech_stopped", cut_ms, cut=True))
                # The rest goes on as the next turn, from the pause.
                self.turn_start_ms = cut_ms
                self._quiet = [(p, t) for p, t in self._quiet if t > cut_ms]
                events.append(TurnEvent("speech_started", cut_ms))
        return events

    def _pause_to_cut_at(self) -> int:
        """The quietest frame of the turn's last third (its end), else the turn's end now."""
        if not self._quiet:
            return self.frames_seen * FRAME_MS
        tail = self._quiet[len(self._quiet) * 2 // 3 :]
        _, at = min(tail, key=lambda item: item[0])
        return at


_WORD = re.compile(r"[^\w']+", re.UNICODE)


def normalise(word: str) -> str:
    """A word as two decodes are compared: case and punctuation do not count."""
    return _WORD.sub("", word.lower())


TRAILING_OFF = ("...", "…", "-")
"""How Whisper ends a word the audio cuts off ("rather...", "De-"): the next decode may hear it otherwise."""


def trails_off(word: str) -> bool:
    return word.rstrip().endswith(TRAILING_OFF)


@dataclass
class LocalAgreement:
    """Words two successive decodes of the open turn agree on become confirmed, never to be taken back."""

    confirmed: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    previous_heard: float = 0.0
    """Seconds of audio the previous decode heard."""

    def update(
        self, hypothesis: Sequence[str], *, ends: Sequence[float] | None = None, heard: float = math.inf
    ) -> list[str]:
        """Newly confirmed words of this decode (as it spells them), past those already confirmed; never
        one this decode hears cut off, even where the previous one heard it alike ("De-" and "De..."), nor,
        given where this decode's words end (`ends`, seconds into the `heard` audio), one that ends past
        the audio the previous decode heard: those two agree on what neither heard."""
        done = len(self.confirmed)
        new, old = list(hypothesis[done:]), self.previous[done:]
        settled = list(ends[done:]) if ends is not None else [0.0] * len(new)
        agreed: list[str] = []
        for word, before, end in zip(new, old, settled, strict=False):
            if normalise(word) != normalise(before) or not normalise(word) or trails_off(word):
                break
            if end > self.previous_heard:
                break
            agreed.append(word)
        self.previous = list(hypothesis)
        self.previous_heard = heard
        self.confirmed.extend(agreed)
        return agreed

    @property
    def text(self) -> str:
        return "".join(self.confirmed)


def words_of(text: str) -> list[str]:
    """A decode's text as words, each with its leading space as Whisper writes them (` word`)."""
    return re.findall(r"\s*\S+", text)
