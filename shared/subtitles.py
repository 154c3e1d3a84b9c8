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
        lines = _wrap(text, max_line_chars)
        if len(lines) <= max_lines:
            result.append(Cue(start=start, end=end, lines=tuple(lines)))
            continue
        words = [word for word in segment.get("words") or [] if str(word.get("word", "")).strip()]
        if words:
            result.extend(_split_by_words(words, start, end, max_line_chars, max_lines))
        else:
            result.extend(_split_by_lines(lines, start, end, max_lines))
    return result


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width, break_long_words=True) or [text]


def _split_by_words(
    words: Sequence[Mapping[str, Any]], start: float, end: float, max_line_chars: int, max_lines: int
) -> list[Cue]:
    """Cues of as many whole words as fit, each timed from its first word's start to its last word's end."""
    groups: list[list[Mapping[str, Any]]] = []
    for word in words:
        candidate = [*groups[-1], word] if groups else [word]
        if groups and len(_wrap(_join(candidate), max_line_chars)) <= max_lines:
            groups[-1] = candidate
        else:
            groups.append([word])
    result = []
    for group in groups:
        cue_start = min(max(start, float(group[0]["start"])), end)
        cue_end = min(max(cue_start, float(group[-1]["end"])), end)
        result.append(Cue(start=cue_start, end=cue_end, lines=tuple(_wrap(_join(group), max_line_chars))))
    return result


def _split_by_lines(lines: Sequence[str], start: float, end: float, max_lines: int) -> list[Cue]:
    """Cues of `max_lines` wrapped lines, timed in proportion to their share of the text."""
    groups = [tuple(lines[index : index + max_lines]) for index in range(0, len(lines), max_lines)]
    total = sum(len(line) for line in lines)
    result = []
    done = 0
    for group in groups:
        cue_start = start + (end - start) * done / total
        done += sum(len(line) for line in group)
        result.append(Cue(start=cue_start, end=start + (end - start) * done / total, lines=group))
    return result


def _join(words: Sequence[Mapping[str, Any]]) -> str:
    return " ".join(str(word["word"]).strip() for word in words)


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"
