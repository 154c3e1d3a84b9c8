"""Subtitle cues cut to rules a reader can follow: at most `max_line_chars` characters a line,
`max_lines` lines a cue and `max_cue_seconds` on screen (broadcast practice: 42, 2 and 7 s).

A decision with no I/O (docs/ARCHITECTURE.md, "Decisions as pure functions"): segments in, cues out.
Cues break only between words, so no word is split or lost; a word longer than a line stands alone on
its line, and a word that lasts longer than a cue may alone in its cue. Among the cuttings that keep
to the rules, the one chosen has the fewest cues with the fewest breaks mid-phrase: a break is
cheapest at the end of a sentence, then at a pause, a comma or a dash, and dearest mid-phrase; a cue
of one or two short words is avoided where the rest allows. A segment's end and a change of speaker
always end a cue. Within a cue, lines are broken as evenly as the words allow, preferably after
punctuation.

Words are timed by the transcript's word timestamps; a segment without them has its words timed in
proportion to their length across the segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.domain.results import Segment

LINE_CHARS = (10, 120)
"""The range `max_line_chars` may take."""
LINES = (1, 6)
CUE_SECONDS = (1.0, 60.0)

BROADCAST_LINE_CHARS = 42
BROADCAST_LINES = 2
BROADCAST_CUE_SECONDS = 7.0

PAUSE_SECONDS = 0.3
"""A gap between two words at least this long is a pause: a good place for a cue to end."""

# What a break after a word costs, by what ends the word (lower is a better place to break).
_SENTENCE_END = ".?!…。？！"
_CLAUSE_END = ",;:—–、，；："
_COST_SENTENCE = 0.0
_COST_CLAUSE = 2.0
_COST_PAUSE = 1.0
_COST_MID_PHRASE = 14.0
_COST_CUE = 10.0
_COST_SHORT_CUE = 8.0


@dataclass(frozen=True)
class CueRules:
    max_line_chars: int = BROADCAST_LINE_CHARS
    max_lines: int = BROADCAST_LINES
    max_cue_seconds: float = BROADCAST_CUE_SECONDS

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            ("max_line_chars", self.max_line_chars, LINE_CHARS),
            ("max_lines", self.max_lines, LINES),
            ("max_cue_seconds", self.max_cue_seconds, CUE_SECONDS),
        ):
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value:g}")

    @classmethod
    def of(cls, *, max_line_chars: int | None, max_lines: int | None, max_cue_seconds: float | None) -> CueRules | None:
        """The rules asked for, broadcast practice for those not given; None when none is given (the
        subtitles then keep their plain cutting)."""
        if max_line_chars is None and max_lines is None and max_cue_seconds is None:
            return None
        return cls(
            max_line_chars=BROADCAST_LINE_CHARS if max_line_chars is None else max_line_chars,
            max_lines=BROADCAST_LINES if max_lines is None else max_lines,
            max_cue_seconds=BROADCAST_CUE_SECONDS if max_cue_seconds is None else max_cue_seconds,
        )


@dataclass(frozen=True)
class TimedWord:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class RuledCue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None


def cut_cues(segments: Iterable[Segment | Mapping[str, Any]], rules: CueRules) -> list[RuledCue]:
    """The cues of timed segments (the caller has checked they are timed), in order, none overlapping."""
    result: list[RuledCue] = []
    for raw in segments:
        segment = raw if isinstance(raw, Segment) else Segment.model_validate(raw)
        if segment.start is None or segment.end is None or not segment.text.strip():
            continue
        start = max(0.0, float(segment.start))
        end = max(start, float(segment.end))
        separator = " " if " " in segment.text.strip() or not segment.words else ""
        for speaker, words in _speaker_runs(segment, start, end):
            for group in _cut(words, rules, separator):
                lines = _lines(group, rules.max_line_chars, separator)
                cue_start = max(group[0].start, result[-1].end if result else 0.0)
                cue_end = max(cue_start, group[-1].end)
                result.append(RuledCue(start=cue_start, end=cue_end, lines=lines, speaker=speaker))
    return result


def _speaker_runs(segment: Segment, start: float, end: float) -> list[tuple[str | None, list[TimedWord]]]:
    """The segment's words, timed and clamped to the segment, in runs of one speaker each."""
    timed = [word for word in segment.words or [] if word.word.strip()]
    if timed:
        words = [
            (word.speaker or segment.speaker, TimedWord(word.word.strip(), *_clamp(word.start, word.end, start, end)))
            for word in timed
        ]
    else:
        words = [(segment.speaker, word) for word in _spread(segment.text.split(), start, end)]
    runs: list[tuple[str | None, list[TimedWord]]] = []
    for speaker, word in words:
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(word)
        else:
            runs.append((speaker, [word]))
    return runs


def _clamp(word_start: float, word_end: float, start: float, end: float) -> tuple[float, float]:
    low = min(max(start, float(word_start)), end)
    return low, min(max(low, float(word_end)), end)


def _spread(tokens: Sequence[str], start: float, end: float) -> list[TimedWord]:
    """Words with no timings of their own, timed in proportion to their length."""
    total = sum(len(token) + 1 for token in tokens) or 1
    words, done = [], 0
    for token in tokens:
        word_start = start + (end - start) * done / total
        done += len(token) + 1
        words.append(TimedWord(token, word_start, start + (end - start) * done / total))
    return words


def _cut(words: Sequence[TimedWord], rules: CueRules, separator: str) -> list[list[TimedWord]]:
    """The cheapest cutting of a run of words into cues that keep to the rules (dynamic programming over
    where each cue ends; a single word is always a cue that may stand)."""
    count = len(words)
    best: list[float] = [0.0] + [float("inf")] * count
    back = [0] * (count + 1)
    for end in range(1, count + 1):
        break_cost = 0.0 if end == count else _break_cost(words[end - 1], words[end])
        for begin in range(end - 1, -1, -1):
            group = words[begin:end]
            if end - begin > 1 and not _fits(group, rules, separator):
                break  # a longer cue (an earlier begin) fits no better
            if best[begin] == float("inf"):
                continue
            cost = best[begin] + _COST_CUE + break_cost + _short_cost(group, separator)
            if cost < best[end]:
                best[end], back[end] = cost, begin
    groups: list[list[TimedWord]] = []
    end = count
    while end > 0:
        groups.append(list(words[back[end] : end]))
        end = back[end]
    return groups[::-1]


def _fits(group: Sequence[TimedWord], rules: CueRules, separator: str) -> bool:
    if group[-1].end - group[0].start > rules.max_cue_seconds:
        return False
    return len(_greedy_lines([word.text for word in group], rules.max_line_chars, separator)) <= rules.max_lines


def _break_cost(before: TimedWord, after: TimedWord) -> float:
    cost = _COST_MID_PHRASE
    if before.text.endswith(tuple(_SENTENCE_END)):
        cost = _COST_SENTENCE
    elif before.text.endswith(tuple(_CLAUSE_END)):
        cost = _COST_CLAUSE
    if after.start - before.end >= PAUSE_SECONDS:
        cost = min(cost, _COST_PAUSE)
    return cost


def _short_cost(group: Sequence[TimedWord], separator: str) -> float:
    """A cue of a word or two (under 12 characters) flashes by: worth avoiding where the rules allow."""
    return _COST_SHORT_CUE if len(separator.join(word.text for word in group)) < 12 and len(group) <= 2 else 0.0


def _greedy_lines(tokens: Sequence[str], width: int, separator: str) -> list[list[str]]:
    lines: list[list[str]] = []
    length = 0
    for token in tokens:
        if lines and length + len(separator) + len(token) <= width:
            lines[-1].append(token)
            length += len(separator) + len(token)
        else:
            lines.append([token])
            length = len(token)
    return lines


def _lines(group: Sequence[TimedWord], width: int, separator: str) -> tuple[str, ...]:
    """The cue's words on as few lines as fit, broken where the lines come out most even (a break after
    punctuation counts as a little more even)."""
    tokens = [word.text for word in group]
    needed = len(_greedy_lines(tokens, width, separator))
    if needed == 1:
        return (separator.join(tokens),)
    count = len(tokens)
    # best[k][i]: the least cost of putting tokens[:i] on k lines; a line's cost is its slack squared.
    inf = float("inf")
    best = [[inf] * (count + 1) for _ in range(needed + 1)]
    back = [[0] * (count + 1) for _ in range(needed + 1)]
    best[0][0] = 0.0
    for lines in range(1, needed + 1):
        for end in range(1, count + 1):
            for begin in range(end - 1, -1, -1):
                text = separator.join(tokens[begin:end])
                if len(text) > width and end - begin > 1:
                    break
                if best[lines - 1][begin] == inf:
                    continue
                cost = best[lines - 1][begin] + (width - len(text)) ** 2
                if end < count and tokens[end - 1].endswith(tuple(_SENTENCE_END + _CLAUSE_END)):
                    cost -= width  # a line that ends a phrase reads better, if not much shorter
                if cost < best[lines][end]:
                    best[lines][end], back[lines][end] = cost, begin
    cut: list[str] = []
    end = count
    for lines in range(needed, 0, -1):
        begin = back[lines][end]
        cut.append(separator.join(tokens[begin:end]))
        end = begin
    return tuple(cut[::-1])
