"""The OpenAI front's subtitle rules: `max_line_chars`, `max_lines` and `max_cue_seconds` form fields for
`response_format` srt and vtt, checked as OpenAI checks a field (a 400 naming it)."""

from __future__ import annotations

import uuid

import pytest

from functions.api.openai_audio import OpenAIError, parse_request, render_answer
from shared.domain.results import Transcript
from shared.domain.subtitle_cues import CueRules
from tests.unit.api.test_openai_audio import form

TEXT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


def long_transcript() -> Transcript:
    words = [{"start": i * 0.5, "end": i * 0.5 + 0.4, "word": " " + token} for i, token in enumerate(TEXT.split())]
    segment = {"start": 0.0, "end": 8.0, "text": TEXT, "words": words}
    return Transcript.model_validate({"text": TEXT, "segments": [segment], "duration": 8.0})


def test_the_rules_cut_the_srt_answer() -> None:
    fields = [("model", "m"), ("response_format", "srt"), ("max_line_chars", "20"), ("max_cue_seconds", "2.5")]
    parsed = parse_request(form(*fields), "transcribe")
    assert parsed.cue_rules == CueRules(max_line_chars=20, max_lines=2, max_cue_seconds=2.5)

    body = bytes(render_answer(long_transcript(), parsed, language="eng", job_id=uuid.uuid4()).body).decode()

    blocks = body.strip().split("\n\n")
    assert len(blocks) >= 4
    assert [token for block in blocks for line in block.split("\n")[2:] for token in line.split()] == TEXT.split()
    assert all(len(line) <= 20 for block in blocks for line in block.split("\n")[2:])


def test_without_rules_the_answer_is_cut_as_before() -> None:
    parsed = parse_request(form(("model", "m"), ("response_format", "vtt")), "transcribe")
    assert parsed.cue_rules is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ((("response_format", "srt"), ("max_line_chars", "5")), "max_line_chars"),
        ((("response_format", "srt"), ("max_line_chars", "4.5")), "max_line_chars"),
        ((("response_format", "vtt"), ("max_lines", "0")), "max_lines"),
        ((("response_format", "vtt"), ("max_cue_seconds", "nan")), "max_cue_seconds"),
        ((("response_format", "json"), ("max_lines", "2")), "max_lines"),
    ],
)
def test_a_bad_rule_is_a_400_naming_it(fields: tuple[tuple[str, str], ...], param: str) -> None:
    with pytest.raises(OpenAIError) as raised:
        parse_request(form(("model", "m"), *fields), "transcribe")

    assert raised.value.status == 400
    assert raised.value.param == param
