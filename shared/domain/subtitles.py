"""Subtitles and plain text from a transcript: SRT, WebVTT and TXT.

Segments are the transcript's own (shared.domain.results.Segment, or mappings of the same shape). A segment
too long to read as one cue (more than two lines of 42 characters, the usual broadcast limit) becomes
several cues: split at word boundaries, timed by the words' own timestamps when the transcript has them
and in proportion to the text otherwise. A segment with a speaker shows it: `[A] …` in SRT, a voice
tag `<v A>` in WebVTT, and a new paragraph at each change of speaker in TXT.

Subtitles need times: a transcript without them (an uploaded text) raises UntimedTranscript.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.core.errors import PermanentError
from shared.domain.results import Segment, Transcript, Word
from shared.domain.subtitle_cues import CueRules, cut_cues

MAX_LINE_CHARS = 42
MAX_LINES = 2


class UntimedTranscript(PermanentError):
    """The transcript has no timings (it was uploaded as text): subtitles cannot be made from it."""


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None


SegmentLike = Segment | Mapping[str, Any]


def to_srt(segments: Iterable[SegmentLike], *, rules: CueRules | None = None) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each. With `rules`,
    cues are cut to them (shared/domain/subtitle_cues.py)."""
    blocks = [
        f"{number}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
        + "\n".join(_with_speaker(cue.lines, f"[{cue.speaker}] " if cue.speaker else ""))
        for number, cue in enumerate(_cues(segments, rules), start=1)
    ]
    return "".join(block + "\n\n" for block in blocks)


def to_vtt(segments: Iterable[SegmentLike], *, rules: CueRules | None = None) -> str:
    """WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues (cut to `rules` if given)."""
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n"
        + "\n".join(_with_speaker(cue.lines, f"<v {_vtt_escape(cue.speaker)}>" if cue.speaker else ""))
        for cue in _cues(segments, rules)
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def to_txt(transcript: Transcript | Mapping[str, Any]) -> str:
    """Plain text, one segment per line, a blank line and `A:` where the speaker changes; the
    transcript's `text` when it has no segments."""
    if not isinstance(transcript, Transcript):
        transcript = Transcript.model_validate(transcript)
    lines: list[str] = []
    speaker: str | None = None
    for segment in transcript.segments:
        text = segment.text.strip()
        if not text:
            continue
        if segment.speaker and segment.speaker != speaker:
            if lines:
                lines.append("")
            speaker = segment.speaker
            text = f"{speaker}: {text}"
        lines.append(text)
    if not lines:
        text = transcript.text.strip()
        return text + "\n" if text else ""
    return "\n".join(lines) + "\n"


def cues(
    segments: Iterable[SegmentLike], *, max_line_chars: int = MAX_LINE_CHARS, max_lines: int = MAX_LINES
) -> list[Cue]:
    """The cues to show: one per segment, or several for a segment too long to read at once."""
    result: list[Cue] = []
    for raw in segments:
        segment = raw if isinstance(raw, Segment) else Segment.model_validate(raw)
        text = " ".join(segment.text.split())
        if not text:
            continue
        if segment.start is None or segment.end is None:
            raise UntimedTranscript()
        start = max(0.0, float(segment.start))
        end = max(start, float(segment.end))
        lines = _wrap(text, max_line_chars)
        if len(lines) <= max_lines:
            result.append(Cue(start=start, end=end, lines=tuple(lines), speaker=segment.speaker))
            continue
        words = [word for word in segment.words or [] if word.word.strip()]
        if words:
            result.extend(_split_by_words(words, start, end, max_line_chars, max_lines, speaker=segment.speaker))
        else:
            result.extend(_split_by_lines(lines, start, end, max_lines, speaker=segment.speaker))
    return result


def _cues(segments: Iterable[SegmentLike], rules: CueRules | None) -> list[Cue]:
    if rules is None:
        return cues(segments)
    segments = list(segments)
    if any(not _timed(segment) for segment in segments):
        raise UntimedTranscript()
    return [Cue(start=c.start, end=c.end, lines=c.lines, speaker=c.speaker) for c in cut_cues(segments, rules)]


def _timed(segment: SegmentLike) -> bool:
    if isinstance(segment, Segment):
        return segment.timed or not segment.text.strip()
    return (segment.get("start") is not None and segment.get("end") is not None) or not str(
        segment.get("text") or ""
    ).strip()


def _with_speaker(lines: tuple[str, ...], prefix: str) -> list[str]:
    return [prefix + lines[0], *lines[1:]] if lines and prefix else list(lines)


def _vtt_escape(speaker: str) -> str:
    # A voice tag's annotation ends at ">"; "&" and "<" would start an entity or a tag.
    return speaker.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width, break_long_words=True) or [text]


def _split_by_words(
    words: Sequence[Word], start: float, end: float, max_line_chars: int, max_lines: int, *, speaker: str | None
) -> list[Cue]:
    """Cues of as many whole words as fit, each timed from its first word's start to its last word's end."""
    groups: list[list[Word]] = []
    for word in words:
        candidate = [*groups[-1], word] if groups else [word]
        if groups and len(_wrap(_join(candidate), max_line_chars)) <= max_lines:
            groups[-1] = candidate
        else:
            groups.append([word])
    result = []
    for group in groups:
        cue_start = min(max(start, float(group[0].start)), end)
        cue_end = min(max(cue_start, float(group[-1].end)), end)
        lines = tuple(_wrap(_join(group), max_line_chars))
        result.append(Cue(start=cue_start, end=cue_end, lines=lines, speaker=speaker))
    return result


def _split_by_lines(
    lines: Sequence[str], start: float, end: float, max_lines: int, *, speaker: str | None
) -> list[Cue]:
    """Cues of `max_lines` wrapped lines, timed in proportion to their share of the text."""
    groups = [tuple(lines[index : index + max_lines]) for index in range(0, len(lines), max_lines)]
    total = sum(len(line) for line in lines)
    result = []
    done = 0
    for group in groups:
        cue_start = start + (end - start) * done / total
        done += sum(len(line) for line in group)
        result.append(Cue(start=cue_start, end=start + (end - start) * done / total, lines=group, speaker=speaker))
    return result


def _join(words: Sequence[Word]) -> str:
    return " ".join(word.word.strip() for word in words)


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"
