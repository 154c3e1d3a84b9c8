"""shared.domain.subtitles: SRT, WebVTT and TXT from transcript segments."""

from __future__ import annotations

import itertools
import re

from shared.domain.subtitles import MAX_LINE_CHARS, cues, to_srt, to_txt, to_vtt

SEGMENTS = [
    {"start": 0.0, "end": 1.5, "text": " Hello world.", "words": []},
    {"start": 3661.0015, "end": 3662.9996, "text": "An hour later.", "words": []},
]


def test_srt_numbers_cues_with_comma_milliseconds() -> None:
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello world.\n\n2\n01:01:01,002 --> 01:01:03,000\nAn hour later.\n\n"
    )


def test_vtt_has_header_and_dot_milliseconds() -> None:
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello world.\n\n01:01:01.002 --> 01:01:03.000\nAn hour later.\n\n"
    )


def test_empty_transcript() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"
    assert to_txt({"text": "", "segments": []}) == ""


def test_blank_segments_are_skipped_and_bad_times_clamped() -> None:
    result = cues([{"start": -0.2, "end": -0.1, "text": "odd"}, {"start": 1, "end": 2, "text": "   "}])

    assert [(cue.start, cue.end, cue.lines) for cue in result] == [(0.0, 0.0, ("odd",))]


def test_long_segment_is_wrapped_on_two_lines() -> None:
    text = "Had he married a more amiable woman he might have been made still"
    (cue,) = cues([{"start": 0, "end": 6, "text": text}])

    assert len(cue.lines) == 2
    assert all(len(line) <= MAX_LINE_CHARS for line in cue.lines)
    assert " ".join(cue.lines) == text


def test_very_long_segment_is_split_at_its_word_times() -> None:
    words = [{"start": i * 0.5, "end": i * 0.5 + 0.4, "word": f" word{i:02d}", "probability": 0.9} for i in range(30)]
    segment = {"start": 0.0, "end": 15.0, "text": "".join(w["word"] for w in words), "words": words}

    result = cues([segment])

    assert len(result) > 1
    assert result[0].start == 0.0
    assert result[-1].end == 29 * 0.5 + 0.4
    for earlier, later in itertools.pairwise(result):
        assert earlier.end <= later.start
    assert all(len(line) <= MAX_LINE_CHARS for cue in result for line in cue.lines)
    assert " ".join(" ".join(cue.lines) for cue in result) == segment["text"].strip()


def test_very_long_segment_without_words_is_timed_by_its_text() -> None:
    text = " ".join(["lorem ipsum dolor sit amet"] * 8)
    result = cues([{"start": 10.0, "end": 20.0, "text": text}])

    assert len(result) > 1
    assert result[0].start == 10.0
    assert result[-1].end == 20.0
    starts = [cue.start for cue in result]
    assert starts == sorted(starts)


def test_srt_timestamps_are_well_formed_for_split_cues() -> None:
    text = " ".join(["lorem ipsum dolor sit amet"] * 8)
    srt = to_srt([{"start": 0.3333, "end": 7.7777, "text": text}])

    stamps = re.findall(r"^(\S+) --> (\S+)$", srt, flags=re.MULTILINE)
    assert stamps
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d,\d\d\d", stamp) for pair in stamps for stamp in pair)


def test_txt_is_one_segment_per_line_or_the_text() -> None:
    assert to_txt({"text": "Hello world. An hour later.", "segments": SEGMENTS}) == "Hello world.\nAn hour later.\n"
    assert to_txt({"text": " Just text. "}) == "Just text.\n"


SPOKEN = [
    {"start": 0.0, "end": 1.0, "text": "Hello there.", "speaker": "A"},
    {"start": 1.2, "end": 2.0, "text": "Hi.", "speaker": "B"},
    {"start": 2.1, "end": 3.0, "text": "How are you?", "speaker": "B"},
    {"start": 3.2, "end": 4.0, "text": "Fine.", "speaker": "A"},
]


def test_srt_prefixes_each_cue_with_its_speaker() -> None:
    srt = to_srt(SPOKEN)
    assert "00:00:00,000 --> 00:00:01,000\n[A] Hello there.\n" in srt
    assert "[B] Hi.\n" in srt and "[B] How are you?\n" in srt


def test_vtt_uses_voice_tags() -> None:
    vtt = to_vtt([*SPOKEN, {"start": 5.0, "end": 6.0, "text": "x", "speaker": "<odd>"}])
    assert "00:00:00.000 --> 00:00:01.000\n<v A>Hello there.\n" in vtt
    assert "<v B>How are you?\n" in vtt
    assert "<v &lt;odd&gt;>x" in vtt


def test_txt_starts_a_paragraph_at_each_change_of_speaker() -> None:
    assert to_txt({"text": "", "segments": SPOKEN}) == "A: Hello there.\n\nB: Hi.\nHow are you?\n\nA: Fine.\n"


def test_subtitles_of_an_untimed_transcript_are_refused() -> None:
    import pytest

    from shared.domain.subtitles import UntimedTranscript

    with pytest.raises(UntimedTranscript):
        to_srt([{"start": None, "end": None, "text": "no times"}])
    assert to_txt({"text": "", "segments": [{"text": "no times"}]}) == "no times\n"
