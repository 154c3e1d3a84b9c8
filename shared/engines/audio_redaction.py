"""Redacted audio: the upload with every stretch where masked PII was spoken replaced by a 1 kHz beep
or by silence (docs/SECURITY.md, "PII redaction").

Two parts. `masked_stretches` is a decision with no I/O: from the masked transcript (shared/engines/pii.py puts
one placeholder such as `[CREDIT_CARD]` in place of the words of an entity, timed from the first masked
word's start to the last one's end) it finds the stretches to cover, padded because word timings are
approximate. `redact_file` streams the upload through PyAV at its own sample rate and channel layout,
replaces those samples in every channel, and writes a 16-bit PCM WAV of the same length, rate and
channels; nothing but the stretches changes (up to the 16-bit quantisation of a float or 24-bit source).
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from shared.domain.results import Segment
from shared.engines.audio import CorruptAudio, NoAudioStream, NotAnAudioFile, UnsupportedCodec
from shared.engines.pii import PLACEHOLDERS

Method = Literal["beep", "silence"]
METHODS: tuple[str, ...] = ("beep", "silence")

PAD_SECONDS = 0.25
"""How far a stretch reaches beyond its masked words' timings on each side: Whisper's word times can be
a word's length off, so a digit said just before the first timed one would otherwise be heard. Never
further than halfway into the neighbouring kept word."""
BEEP_HZ = 1000.0
BEEP_LEVEL = 0.25
"""The beep's peak, of full scale (−12 dBFS): clearly a beep, not painful."""
RAMP_SECONDS = 0.005
"""A beep fades in and out over this long, so its edges do not click."""

_MASKS = tuple(dict.fromkeys(PLACEHOLDERS.values()))


@dataclass(frozen=True)
class Stretch:
    start: float
    end: float
    kind: str
    """The placeholder that masked it (`[PHONE]`, …)."""


def masked_stretches(
    segments: Iterable[Segment], *, duration: float | None = None, pad: float = PAD_SECONDS
) -> list[Stretch]:
    """The stretches of the recording to cover, in order, overlapping ones merged. A masked word's
    stretch is its timing padded by `pad` (at most halfway into the kept words on either side); a
    segment with a placeholder but no word timings is covered whole."""
    found: list[Stretch] = []
    for segment in segments:
        words = [word for word in segment.words or [] if word.word.strip()]
        if not words:
            kind = _mask_in(segment.text)
            if kind is not None and segment.start is not None and segment.end is not None:
                found.append(Stretch(max(0.0, segment.start - pad), segment.end + pad, kind))
            continue
        for index, word in enumerate(words):
            kind = _mask_in(word.word)
            if kind is None:
                continue
            low = word.start - pad
            if index > 0 and _mask_in(words[index - 1].word) is None:
                low = max(low, (words[index - 1].start + words[index - 1].end) / 2)
            high = word.end + pad
            if index + 1 < len(words) and _mask_in(words[index + 1].word) is None:
                high = min(high, (words[index + 1].start + words[index + 1].end) / 2)
            found.append(Stretch(max(0.0, min(low, word.start)), max(high, word.end), kind))
    found.sort(key=lambda stretch: stretch.start)
    merged: list[Stretch] = []
    for stretch in found:
        if merged and stretch.start <= merged[-1].end:
            last = merged[-1]
            kind = last.kind if last.kind == stretch.kind else f"{last.kind}{stretch.kind}"
            merged[-1] = Stretch(last.start, max(last.end, stretch.end), kind)
        else:
            merged.append(stretch)
    if duration is not None:
        merged = [
            Stretch(s.start, min(s.end, duration), s.kind) for s in merged if s.start < duration and s.end > s.start
        ]
    return merged


def _mask_in(text: str) -> str | None:
    return next((mask for mask in _MASKS if mask in text), None)


@dataclass(frozen=True)
class RedactedWav:
    data: bytes
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def redact_file(path: Path, stretches: Sequence[Stretch], *, method: Method = "beep") -> RedactedWav:
    """The audio of `path` as a 16-bit WAV, same rate and channels, with `stretches` replaced."""
    out = io.BytesIO()
    frames = 0
    with _open_audio(path) as (container, stream):
        rate = int(stream.codec_context.sample_rate)
        channels = int(stream.codec_context.channels)
        spans = [(round(s.start * rate), round(s.end * rate)) for s in stretches]
        with wave.open(out, "wb") as wav:
            wav.setnchannels(channels)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            for block in _blocks(container, stream, rate, channels):
                _cover(block, frames, spans, rate, method)
                wav.writeframes(_pcm16(block))
                frames += block.shape[0]
    return RedactedWav(data=out.getvalue(), sample_rate=rate, channels=channels, frames=frames)


class _open_audio:  # used as a context manager, named like one
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
        try:
            self.container = av.open(str(self.path), mode="r")
        except av.error.FFmpegError as exc:
            raise NotAnAudioFile() from exc
        if not self.container.streams.audio:
            self.container.close()
            raise NoAudioStream()
        stream = self.container.streams.audio[0]
        if stream.codec_context is None:
            self.container.close()
            raise UnsupportedCodec()
        if not stream.codec_context.channels or not stream.codec_context.sample_rate:
            self.container.close()
            raise CorruptAudio("the audio stream declares no channels or no sample rate")
        return self.container, stream

    def __exit__(self, *_: object) -> None:
        self.container.close()


def _blocks(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, rate: int, channels: int
) -> Iterator[npt.NDArray[np.float32]]:
    """The decoded samples as (frames, channels) float32 blocks, at the stream's own rate and layout."""
    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
    try:
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                yield _planes(converted, channels)
        for converted in resampler.resample(None):
            yield _planes(converted, channels)
    except av.error.FFmpegError as exc:
        raise CorruptAudio() from exc


def _planes(frame: av.AudioFrame, channels: int) -> npt.NDArray[np.float32]:
    array = frame.to_ndarray().astype(np.float32, copy=False)
    return np.ascontiguousarray(array.reshape(channels, -1).T)


def _cover(
    block: npt.NDArray[np.float32], offset: int, spans: Sequence[tuple[int, int]], rate: int, method: Method
) -> None:
    """Replace, in place, the block's samples that fall in any span (every channel alike)."""
    length = block.shape[0]
    for start, end in spans:
        low, high = max(start, offset), min(end, offset + length)
        if low >= high:
            continue
        if method == "silence":
            block[low - offset : high - offset, :] = 0.0
            continue
        positions = np.arange(low, high, dtype=np.float64)
        tone = BEEP_LEVEL * np.sin(2 * math.pi * BEEP_HZ * (positions - start) / rate)
        ramp = max(1, round(RAMP_SECONDS * rate))
        envelope = np.minimum(1.0, np.minimum(positions - start + 1, end - positions) / ramp)
        block[low - offset : high - offset, :] = (tone * envelope).astype(np.float32)[:, None]


def _pcm16(block: npt.NDArray[np.float32]) -> bytes:
    # FFmpeg scales 16-bit samples by 1/32768: scaling back by 32768 gives a 16-bit upload's own samples.
    scaled = np.clip(np.rint(block * 32768.0), -32768, 32767).astype("<i2")
    return scaled.tobytes()
