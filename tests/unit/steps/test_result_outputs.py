"""What every step's result goes through before it is stored (shared/steps/outputs.py): PII masked in
transcripts, translations and summaries when the job asks for it, timings kept."""

from __future__ import annotations

from shared.domain.results import Segment, Summary, Translation, Word
from shared.steps.outputs import redact


def test_a_translation_is_masked_segment_by_segment_with_its_times_and_speakers() -> None:
    translation = Translation(
        language="en",
        text="Write to anna.berg@example.com. Call 202-555-0143 tomorrow.",
        segments=[
            Segment(start=0.0, end=2.0, text="Write to anna.berg@example.com.", speaker="A"),
            Segment(start=2.5, end=4.0, text="Call 202-555-0143 tomorrow.", speaker="B"),
        ],
        source_language="fra",
        target_language="en",
    )

    masked = redact(translation, language="en")

    assert isinstance(masked, Translation)
    assert [s.text for s in masked.segments] == ["Write to [EMAIL].", "Call [PHONE] tomorrow."]
    assert [(s.start, s.end, s.speaker) for s in masked.segments] == [(0.0, 2.0, "A"), (2.5, 4.0, "B")]
    assert masked.text == "Write to [EMAIL]. Call [PHONE] tomorrow."
    assert masked.target_language == "en"


def test_words_are_masked_with_their_timings() -> None:
    words = [
        Word(start=0.0, end=0.3, word="call"),
        Word(start=0.4, end=0.8, word="202-555-0143"),
        Word(start=0.9, end=1.2, word="now"),
    ]
    translation = Translation(segments=[Segment(start=0.0, end=1.2, text="call 202-555-0143 now", words=words)])

    (segment,) = redact(translation, language="en").segments  # type: ignore[attr-defined]

    assert [(w.word, w.start, w.end) for w in segment.words or []] == [
        ("call", 0.0, 0.3),
        ("[PHONE]", 0.4, 0.8),
        ("now", 0.9, 1.2),
    ]


def test_a_summary_and_its_key_points_are_masked() -> None:
    summary = Summary(summary="Mark (mark@gmail.com) will call back.", key_points=["Card 4539 1488 0343 6467 on file"])

    masked = redact(summary, language="en")

    assert isinstance(masked, Summary)
    assert "mark@gmail.com" not in masked.summary and "[EMAIL]" in masked.summary
    assert masked.key_points == ["Card [CREDIT_CARD] on file"]
