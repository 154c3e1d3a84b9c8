"""Calls recorded one party per channel (`channels: "split"`): how loud each channel is, moment by moment,
and the words a channel's transcript owes to the other party's voice leaking into its microphone.

A headset or phone line carries some of the other side at a much lower level (crosstalk); Whisper on
that channel may transcribe it as well, and the merged call then has those words twice, once under the
wrong speaker. A word is the other party's when, over its span, some other channel is louder than its
own channel by more than `margin_db`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.engines.audio import SAMPLE_RATE, decode_window

FRAME_SECONDS = 0.05
CROSSTALK_MARGIN_DB = 10.0
_WINDOW_SECONDS = 60.0
_SILENCE_DB = -100.0

Levels = npt.NDArray[np.float64]
"""dB per frame: one row per channel."""


def channel_levels(path: Path | str, channels: int, *, frame_seconds: float = FRAME_SECONDS) -> Levels:
    """The level (dB relative to full scale) of each channel in frames of `frame_seconds`, decoded a
    minute at a time, so a long call is never held whole."""

    frame = max(1, round(frame_seconds * SAMPLE_RATE))
    rows: list[list[npt.NDArray[np.float64]]] = [[] for _ in range(channels)]
    start = 0.0
    while True:
        pieces = [decode_window(path, start, _WINDOW_SECONDS, channel=channel) for channel in range(channels)]
        if not any(len(piece) for piece in pieces):
            break
        length = max(len(piece) for piece in pieces)
        for channel, piece in enumerate(pieces):
            padded = np.zeros(length, dtype=np.float64)
            padded[: len(piece)] = piece
            rows[channel].append(_frame_db(padded, frame))
        if length < round(_WINDOW_SECONDS * SAMPLE_RATE):
            break
        start += _WINDOW_SECONDS
    return np.vstack([np.concatenate(row) if row else np.zeros(0) for row in rows])


def levels_from_samples(
    channels: Sequence[npt.NDArray[np.floating[Any]]], *, frame_seconds: float = FRAME_SECONDS
) -> Levels:
    """`channel_levels` of channels already decoded (16 kHz float samples, one array per channel)."""

    frame = max(1, round(frame_seconds * SAMPLE_RATE))
    length = max(len(channel) for channel in channels)
    rows = []
    for channel in channels:
        padded = np.zeros(length, dtype=np.float64)
        padded[: len(channel)] = channel
        rows.append(_frame_db(padded, frame))
    return np.vstack(rows)


def _frame_db(samples: npt.NDArray[np.float64], frame: int) -> npt.NDArray[np.float64]:
    count = -(-len(samples) // frame)
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[: len(samples)] = samples
    power = np.mean(padded.reshape(count, frame) ** 2, axis=1)
    return np.maximum(10 * np.log10(power + 1e-12), _SILENCE_DB)


def drop_crosstalk(
    transcripts: Mapping[int, Sequence[Mapping[str, Any]]],
    levels: Levels,
    *,
    frame_seconds: float = FRAME_SECONDS,
    margin_db: float = CROSSTALK_MARGIN_DB,
) -> dict[int, list[dict[str, Any]]]:
    """Each channel's segments without the words another channel was clearly louder for; a segment left
    with no words is dropped, one that lost some has its text rebuilt from the words it kept."""
    kept: dict[int, list[dict[str, Any]]] = {}
    for channel, segments in transcripts.items():
        kept[channel] = []
        for segment in segments:
            words = list(segment.get("words") or [])
            if not words:
                if not _leaked(channel, segment, levels, frame_seconds, margin_db):
                    kept[channel].append(dict(segment))
                continue
            own = [word for word in words if not _leaked(channel, word, levels, frame_seconds, margin_db)]
            if not own:
                continue
            copy = {**segment, "words": own}
            if len(own) != len(words):
                copy["text"] = " ".join(str(word["word"]).strip() for word in own)
                copy["start"], copy["end"] = own[0]["start"], own[-1]["end"]
            kept[channel].append(copy)
    return kept


def _leaked(channel: int, item: Mapping[str, Any], levels: Levels, frame_seconds: float, margin_db: float) -> bool:
    if item.get("start") is None or item.get("end") is None or channel >= len(levels):
        return False
    first = max(0, int(float(item["start"]) / frame_seconds))
    last = max(first + 1, int(np.ceil(float(item["end"]) / frame_seconds)))
    span = levels[:, first:last]
    if span.shape[1] == 0:
        return False
    # Mean power over the word, per channel, back in dB.
    power = 10 * np.log10(np.mean(10 ** (span / 10), axis=1))
    others = np.delete(power, channel)
    return bool(len(others)) and bool(np.max(others) - power[channel] > margin_db)
