"""shared.domain.subtitle_cues: cues cut to line, line-count and duration rules, at word boundaries."""

from __future__ import annotations

import itertools
import re

import pytest

from shared.domain.subtitle_cues import CueRules, cut_cues
from shared.domain.subtitles import UntimedTranscript, to_srt, to_vtt

SENTENCE = (
    "Had he married a more amiable woman, he might have been made still more respectable by her. "
    "He might even have been made amiable himself; for he was very young when he married, "
    "and very fond of his wife."
)


def _timed_segment(text: str, *, start: float = 0.0, word_seconds: float = 0.3, gap: float = 0.05, **extra: object):
    words = []
    at = start
    for token in text.split():
        words.append({"start": at, "end": at + word_seconds, "word": " " + token})
        at += word_seconds + gap
    return {"start": start, "end": at, "text": " " + text, "words": words, **extra}


def _words_of(cues) -> list[str]:
    return [token for cue in cues for line in cue.lines for token in line.split()]


@pytest.mark.parametrize(
    ("line_chars", "lines", "seconds"), [(42, 2, 7.0), (32, 1, 3.0), (20, 3, 4.0), (60, 2, 10.0), (10, 1, 1.0)]
)
def test_cues_keep_every_rule_and_every_word(line_chars: int, lines: int, seconds: float) -> None:
    segment = _timed_segment(SENTENCE)
    rules = CueRules(max_line_chars=line_chars, max_lines=lines, max_cue_seconds=seconds)

    result = cut_cues([segment], rules)

    assert _words_of(result) == SENTENCE.split()  # none split, none lost, none doubled
    for cue in result:
        assert len(cue.lines) <= lines
        # A line over the width is one word too long for any line.
        assert all(len(line) <= line_chars or " " not in line for line in cue.lines), cue.lines
        assert cue.end - cue.start <= seconds + 1e-9
        assert cue.end >= cue.start
    for earlier, later in itertools.pairwise(result):
        assert earlier.end <= later.start


def test_breaks_prefer_punctuation_to_mid_phrase() -> None:
    result = cut_cues([_timed_segment(SENTENCE)], CueRules())

    # Each cue but the last ends on punctuation: the text's commas, semicolon and full stops give room enough.
    assert all(re.search(r"[.,;]$", cue.lines[-1]) for cue in result[:-1]), [cue.lines for cue in result]


def test_a_pause_is_preferred_to_a_mid_phrase_break() -> None:
    first = "one two three four five six seven eight"
    second = "nine ten eleven twelve thirteen fourteen"
    words = _timed_segment(first)["words"] + _timed_segment(second, start=4.0)["words"]
    segment = {"start": 0.0, "end": 6.5, "text": f"{first} {second}", "words": words}

    result = cut_cues([segment], CueRules(max_line_chars=42, max_lines=1, max_cue_seconds=7))

    assert [" ".join(cue.lines) for cue in result] == [first, second]


def test_lines_in_a_cue_are_balanced() -> None:
    text = "the quick brown fox jumps over the lazy dog again and again"
    (cue,) = cut_cues([_timed_segment(text)], CueRules(max_line_chars=42, max_lines=2, max_cue_seconds=7))

    assert len(cue.lines) == 2
    assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 8, cue.lines


def test_a_word_longer_than_a_line_stands_alone_unsplit() -> None:
    text = "see Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch today"
    result = cut_cues([_timed_segment(text)], CueRules(max_line_chars=20, max_lines=2, max_cue_seconds=7))

    assert _words_of(result) == text.split()
    assert any("Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch" in cue.lines for cue in result)


def test_a_change_of_speaker_starts_a_new_cue() -> None:
    segment = _timed_segment("yes I agree no I do not", speaker="A")
    for word in segment["words"][3:]:
        word["speaker"] = "B"
    other = _timed_segment("fine", start=10.0, speaker="A")

    result = cut_cues([segment, other], CueRules())

    assert [(cue.speaker, " ".join(cue.lines)) for cue in result] == [
        ("A", "yes I agree"),
        ("B", "no I do not"),
        ("A", "fine"),
    ]


def test_segment_without_word_timings_is_timed_by_text_length() -> None:
    segment = {"start": 10.0, "end": 30.0, "text": SENTENCE}

    result = cut_cues([segment], CueRules(max_cue_seconds=5))

    assert _words_of(result) == SENTENCE.split()
    assert result[0].start == 10.0 and result[-1].end == pytest.approx(30.0)
    assert all(cue.end - cue.start <= 5 + 1e-9 for cue in result)


def test_unspaced_text_is_joined_without_spaces() -> None:
    words = [
        {"start": i * 0.2, "end": i * 0.2 + 0.2, "word": char} for i, char in enumerate("今天天气很好我们去公园散步吧")
    ]
    segment = {"start": 0.0, "end": 2.8, "text": "今天天气很好我们去公园散步吧", "words": words}

    result = cut_cues([segment], CueRules(max_line_chars=10, max_lines=1, max_cue_seconds=7))

    assert "".join(line for cue in result for line in cue.lines) == "今天天气很好我们去公园散步吧"
    assert all(len(line) <= 10 for cue in result for line in cue.lines)


def test_srt_and_vtt_take_the_rules() -> None:
    segments = [_timed_segment(SENTENCE, speaker="A")]
    rules = CueRules(max_line_chars=30, max_lines=1, max_cue_seconds=3)

    srt = to_srt(segments, rules=rules)
    vtt = to_vtt(segments, rules=rules)

    srt_cues = srt.strip().split("\n\n")
    assert len(srt_cues) > 5
    for block in srt_cues:
        _number, _timing, *lines = block.split("\n")
        assert len(lines) == 1 and lines[0].startswith("[A] ")
        assert len(lines[0].removeprefix("[A] ")) <= 30
    assert vtt.count("<v A>") == len(srt_cues)
    # Without rules the plain cutting (two lines of 42) is kept.
    assert to_srt(segments) != srt


def test_rules_on_an_untimed_transcript_are_refused() -> None:
    with pytest.raises(UntimedTranscript):
        to_srt([{"text": "no times"}], rules=CueRules())


def test_rules_are_checked_and_default_to_broadcast_practice() -> None:
    assert CueRules.of(max_line_chars=None, max_lines=None, max_cue_seconds=None) is None
    assert CueRules.of(max_line_chars=None, max_lines=1, max_cue_seconds=None) == CueRules(42, 1, 7.0)
    for bad in ({"max_line_chars": 5}, {"max_lines": 0}, {"max_cue_seconds": 0.5}, {"max_cue_seconds": 600}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CueRules(**bad)  # type: ignore[arg-type]
