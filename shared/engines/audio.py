"""Decode uploaded audio into what the speech models read: 16 kHz mono float32.

Everything goes through PyAV (FFmpeg), so any common container and codec works: WAV (16-bit or
32-bit float), FLAC, MP3, OGG/Opus, M4A/AAC, … An upload that cannot be used is a `PermanentError`
with a message a user understands ("empty file", "not an audio file", "no audio stream", "audio
longer than the maximum of N s"): retrying would not make it decodable.

A mono source is decoded exactly as faster-whisper's own `decode_audio` does it (FFmpeg resamples
to 16-bit mono, then the samples are scaled to float), so the stack's transcript of a file is the one
faster-whisper gives for it; a float resampling path changed the transcript of the 11 kHz meeting
fixture and slowed it down. A multi-channel source is averaged (see `_resampled_frames`), and
`channel=i` decodes one channel alone.

Long files need not be held whole: `iter_chunks` streams fixed-size pieces and `decode_window`
seeks to one stretch of the file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from shared.core.errors import PermanentError

SAMPLE_RATE = 16000
"""What Whisper, Silero VAD and MMS-LID all expect."""

AudioArray = npt.NDArray[np.float32]


class AudioError(PermanentError):
    """The audio cannot be used."""


class EmptyAudioFile(AudioError):
    """empty file"""


class NotAnAudioFile(AudioError):
    """not an audio file"""


class NoAudioStream(AudioError):
    """no audio stream"""


class CorruptAudio(AudioError):
    """the audio stream is corrupt and cannot be decoded"""


class UnsupportedCodec(AudioError):
    """the audio is in a format (codec) that cannot be decoded"""


class NoSuchChannel(AudioError):
    """the audio has no such channel"""

    def __init__(self, channel: int, channels: int) -> None:
        super().__init__(f"the audio has {channels} channel(s); channel {channel} does not exist")
        self.channel = channel
        self.channels = channels


class AudioTooLong(AudioError):
    """audio longer than the maximum allowed"""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"audio longer than the maximum of {max_seconds:g} s")
        self.max_seconds = max_seconds


@dataclass(frozen=True)
class AudioInfo:
    duration_seconds: float
    sample_rate: int
    channels: int
    codec: str
    format_name: str


def probe(path: Path | str) -> AudioInfo:
    """What the file holds, without decoding it (unless its container does not record a duration)."""
    with _open(path) as container:
        stream = _audio_stream(container)
        duration = _declared_duration(container, stream)
        info = AudioInfo(
            duration_seconds=duration if duration is not None else math.nan,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            codec=stream.codec_context.name,
            format_name=container.format.name,
        )
    if duration is None:
        # Some containers (raw ADTS, some OGG muxers) do not say; count the samples instead.
        samples = sum(len(chunk) for chunk in iter_chunks(path, chunk_seconds=60.0))
        info = AudioInfo(
            duration_seconds=samples / SAMPLE_RATE,
            sample_rate=info.sample_rate,
            channels=info.channels,
            codec=info.codec,
            format_name=info.format_name,
        )
    return info


def decode(
    path: Path | str,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    channel: int | None = None,
) -> AudioArray:
    """The whole file as one mono float32 array at `sample_rate`: all channels mixed, or only
    `channel` (0-based) when it is given.

    Raises `AudioTooLong` as soon as decoding passes `max_seconds`, so an over-long upload costs
    no more than the allowed length to reject.
    """
    pieces = list(
        iter_chunks(path, sample_rate=sample_rate, chunk_seconds=30.0, max_seconds=max_seconds, channel=channel)
    )
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces)


def iter_chunks(
    path: Path | str,
    *,
    sample_rate: int = SAMPLE_RATE,
    chunk_seconds: float = 30.0,
    max_seconds: float | None = None,
    channel: int | None = None,
) -> Iterator[AudioArray]:
    """Consecutive pieces of `chunk_seconds` (the last one shorter), decoded as they are needed."""
    chunk_samples = max(1, round(chunk_seconds * sample_rate))
    limit = None if max_seconds is None else math.ceil(max_seconds * sample_rate)
    pending: list[AudioArray] = []
    pending_samples = 0
    emitted = 0
    for frame in _resampled_frames(path, sample_rate=sample_rate, start_seconds=0.0, channel=channel):
        if limit is not None and emitted + pending_samples + len(frame) > limit:
            raise AudioTooLong(max_seconds or 0.0)
        pending.append(frame)
        pending_samples += len(frame)
        while pending_samples >= chunk_samples:
            joined = np.concatenate(pending)
            yield joined[:chunk_samples]
            emitted += chunk_samples
            rest = joined[chunk_samples:]
            pending = [rest] if len(rest) else []
            pending_samples = len(rest)
    if pending_samples:
        yield np.concatenate(pending)


def decode_window(
    path: Path | str,
    start_seconds: float,
    duration_seconds: float,
    *,
    sample_rate: int = SAMPLE_RATE,
    channel: int | None = None,
) -> AudioArray:
    """The stretch [start, start + duration) of the file, found by seeking rather than decoding from 0.

    Only the window is decoded and held, so a chunk of a long upload costs memory for its own length.
    """
    if duration_seconds <= 0:
        return np.zeros(0, dtype=np.float32)
    start_seconds = max(0.0, start_seconds)
    wanted = round(duration_seconds * sample_rate)
    pieces: list[AudioArray] = []
    have = 0
    for frame in _resampled_frames(path, sample_rate=sample_rate, start_seconds=start_seconds, channel=channel):
        pieces.append(frame)
        have += len(frame)
        if have >= wanted:
            break
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces)[:wanted]


def _resampled_frames(
    path: Path | str, *, sample_rate: int, start_seconds: float, channel: int | None
) -> Iterator[AudioArray]:
    """Mono float32 samples at `sample_rate` from `start_seconds` on, frame by frame.

    Seeking lands on a packet at or before the target; samples before it are dropped using each
    frame's timestamp, so a window starts where it was asked to, within a sample.
    """
    with _open(path) as container:
        stream = _audio_stream(container)
        channels = stream.codec_context.channels or 1
        if channel is not None and not 0 <= channel < channels:
            raise NoSuchChannel(channel, channels)
        to_mono = _mono_converter(channels, channel, sample_rate)
        if start_seconds > 0 and stream.time_base is not None:
            container.seek(int(start_seconds / stream.time_base), stream=stream, backward=True, any_frame=False)
        # Samples still to drop before the requested start; known once the first frame's time is.
        to_skip: int | None = None if start_seconds > 0 else 0
        try:
            # None at the end flushes what the resampler still holds.
            for frame in itertools.chain(container.decode(stream), [None]):
                if frame is not None and to_skip is None:
                    frame_start = float(frame.time) if frame.time is not None else 0.0
                    to_skip = max(0, round((start_seconds - frame_start) * sample_rate))
                for converted in to_mono(frame):
                    samples = converted
                    if to_skip:
                        dropped = min(to_skip, len(samples))
                        samples = samples[dropped:]
                        to_skip -= dropped
                    if len(samples):
                        yield samples
        except av.error.FFmpegError as exc:
            raise CorruptAudio(f"the audio stream is corrupt and cannot be decoded: {exc}") from exc


def _mono_converter(
    channels: int, channel: int | None, sample_rate: int
) -> Callable[[av.AudioFrame | None], Iterator[AudioArray]]:
    """How one decoded frame becomes mono float32 samples at `sample_rate` (None flushes)."""
    if channel is None and channels > 1:
        # Channels are kept through resampling and averaged afterwards: FFmpeg's own down-mix adds
        # them at -3 dB each, which lifts a loud stereo recording past full scale.
        mixing = av.AudioResampler(format="fltp", rate=sample_rate)

        def mixed(frame: av.AudioFrame | None) -> Iterator[AudioArray]:
            for out in mixing.resample(frame):
                yield out.to_ndarray().mean(axis=0, dtype=np.float32)

        return mixed
    # faster-whisper's decode_audio: FFmpeg resamples to 16-bit, the samples are then scaled by 1/32768.
    # Matching it sample for sample gives the transcript faster-whisper gives for the same file.
    # Planar 16-bit keeps each channel in its own row, so one can be picked without a down-mix.
    resampler = av.AudioResampler(
        format="s16" if channel is None else "s16p", layout="mono" if channel is None else None, rate=sample_rate
    )
    row = channel or 0

    def single(frame: av.AudioFrame | None) -> Iterator[AudioArray]:
        for out in resampler.resample(frame):
            yield out.to_ndarray()[row].astype(np.float32) / 32768.0

    return single


def _open(path: Path | str) -> av.container.InputContainer:
    file = Path(path)
    try:
        if file.stat().st_size == 0:
            raise EmptyAudioFile()
    except FileNotFoundError as exc:
        raise NotAnAudioFile(f"not an audio file: {file.name} does not exist") from exc
    try:
        return av.open(str(file), mode="r")
    except av.error.FFmpegError as exc:
        raise NotAnAudioFile() from exc


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise NoAudioStream()
    stream = container.streams.audio[0]
    # FFmpeg opens a stream whose codec it has no decoder for (a WAV with an unknown format tag) and
    # leaves it without a codec context; a header that declares no channels or no rate decodes nothing.
    if stream.codec_context is None:
        raise UnsupportedCodec()
    if (stream.codec_context.channels or 0) <= 0:
        raise CorruptAudio("the audio stream declares no channels")
    if (stream.codec_context.sample_rate or 0) <= 0:
        raise CorruptAudio("the audio stream declares no sample rate")
    return stream


def _declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None
