"""Subtitles and plain text from a transcript: SRT, WebVTT and TXT.

Segments are the transcript's own (`{start, end, text, words}` in seconds). A segment too long to
read as one cue (more than two lines of 42 characters, the usual broadcast limit) becomes several
cues: split at word boundaries, timed by the words' own timestamps when the transcript has them and
in proportion to the text otherwise.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_LINE_CHARS = 42
MAX_LINES = 2


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    blocks = [
        f"{number}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n" + "\n".join(cue.lines)
        for number, cue in enumerate(cues(segments), start=1)
    ]
    return "".join(block + "\n\n" for block in blocks)


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    """WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues."""
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n" + "\n".join(cue.lines)
        for cue in cues(segments)
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def to_txt(transcript: Mapping[str, Any]) -> str:
    """Plain text, one segment per line; the transcript's `text` when it has no segments."""
    lines = [str(segment.get("text", "")).strip() for segment in transcript.get("segments") or []]
    lines = [line for line in lines if line]
    if not lines:
        text = str(transcript.get("text") or "").strip()
        return text + "\n" if text else ""
    return "\n".join(lines) + "\n"


def cues(
    segments: Iterable[Mapping[str, Any]], *, max_line_chars: int = MAX_LINE_CHARS, max_lines: int = MAX_LINES
) -> list[Cue]:
    """The cues to show: one per segment, or several for a segment too long to read at once."""
    result: list[Cue] = []
    for segment in segments:
        text = " ".join(str(segment.get("text", "")).split())
        if not text:
            continue
        start = max(0.0, float(segment["start"]))
        end = max(start, float(segment["end"]))
        for piece_start, piece_end, piece_text in _split(
            start, end, text, segment.get("words") or [], max_line_chars * max_lines
        ):
            lines = textwrap.wrap(piece_text, width=max_line_chars, break_long_words=True) or [piece_text]
            result.append(Cue(start=piece_start, end=piece_end, lines=tuple(lines)))
    return result


def _split(
    start: float, end: float, text: str, words: Sequence[Mapping[str, Any]], limit: int
) -> list[tuple[float, float, str]]:
    """Cut a segment into pieces of at most `limit` characters, each with its time span."""
    if len(text) <= limit:
        return [(start, end, text)]
    timed = [word for word in words if str(word.get("word", "")).strip()]
    if timed:
        return _split_by_words(timed, limit, start, end)
    return _split_by_characters(start, end, text, limit)


def _split_by_words(
    words: Sequence[Mapping[str, Any]], limit: int, start: float, end: float
) -> list[tuple[float, float, str]]:
    groups: list[list[Mapping[str, Any]]] = [[]]
    length = 0
    for word in words:
        token = str(word["word"]).strip()
        needed = len(token) + (1 if groups[-1] else 0)
        if groups[-1] and length + needed > limit:
            groups.append([])
            length = 0
            needed = len(token)
        groups[-1].append(word)
        length += needed
    pieces = []
    for group in groups:
        piece_start = min(max(start, float(group[0]["start"])), end)
        piece_end = min(max(piece_start, float(group[-1]["end"])), end)
        pieces.append((piece_start, piece_end, " ".join(str(word["word"]).strip() for word in group)))
    return pieces


def _split_by_characters(start: float, end: float, text: str, limit: int) -> list[tuple[float, float, str]]:
    chunks = textwrap.wrap(text, width=limit, break_long_words=True)
    total = sum(len(chunk) for chunk in chunks)
    pieces = []
    done = 0
    for chunk in chunks:
        piece_start = start + (end - start) * done / total
        done += len(chunk)
        pieces.append((piece_start, start + (end - start) * done / total, chunk))
    return pieces


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"
