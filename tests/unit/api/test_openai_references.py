"""known_speaker_names[] and known_speaker_references[] on the OpenAI front
(functions/api/openai_audio/references.py): what is accepted, what is a 400 naming the field, and what
the job records of them."""

from __future__ import annotations

import base64

import pytest

from functions.api.openai_audio import OpenAIError, parse_request
from tests.unit.api.test_openai_audio import form

CLIP = b"RIFF0000WAVEfmt fake clip"
URL = "data:audio/wav;base64," + base64.b64encode(CLIP).decode()
DIARIZED = ("response_format", "diarized_json")


def test_names_and_references_pair_up_and_the_job_records_their_blobs() -> None:
    mp3 = "data:audio/mpeg;base64," + base64.b64encode(b"ID3 another").decode()
    parsed = parse_request(
        form(
            ("model", "gpt-4o-transcribe-diarize"),
            DIARIZED,
            ("known_speaker_names[]", "agent"),
            ("known_speaker_names[]", "Dr. Smith, MD"),
            ("known_speaker_references[]", URL),
            ("known_speaker_references[]", mp3),
        ),
        "transcribe",
    )

    assert [(r.name, r.audio, r.extension) for r in parsed.references] == [
        ("agent", CLIP, ".wav"),
        ("Dr. Smith, MD", b"ID3 another", ".mp3"),
    ]
    options = parsed.job_options(("job/references/0.wav", "job/references/1.mp3"))
    assert options["speaker_labels"] is True
    assert options["speaker_references"] == [
        {"name": "agent", "blob": "job/references/0.wav"},
        {"name": "Dr. Smith, MD", "blob": "job/references/1.mp3"},
    ]


def test_without_references_the_job_records_none() -> None:
    parsed = parse_request(form(("model", "m"), DIARIZED), "transcribe")

    assert parsed.references == ()
    assert "speaker_references" not in parsed.job_options()


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ((("known_speaker_names[]", "a"), ("known_speaker_references[]", URL)), "known_speaker_names", "diarized_json"),
        ((DIARIZED, ("known_speaker_names[]", "a")), "known_speaker_names", "one known_speaker_references"),
        ((DIARIZED, ("known_speaker_references[]", URL)), "known_speaker_references", "one known_speaker_references"),
        (
            (
                DIARIZED,
                *[("known_speaker_names[]", f"n{i}") for i in range(5)],
                *[("known_speaker_references[]", URL)] * 5,
            ),
            "known_speaker_names",
            "at most 4",
        ),
        (
            (
                DIARIZED,
                ("known_speaker_names[]", "a"),
                ("known_speaker_names[]", "a"),
                *[("known_speaker_references[]", URL)] * 2,
            ),
            "known_speaker_names",
            "each name once",
        ),
        (
            (DIARIZED, ("known_speaker_names[]", "a"), ("known_speaker_references[]", "https://example.com/a.wav")),
            "known_speaker_references",
            "data URL",
        ),
        (
            (DIARIZED, ("known_speaker_names[]", "a"), ("known_speaker_references[]", "data:text/plain;base64,aGk=")),
            "known_speaker_references",
            "not an audio type",
        ),
        (
            (DIARIZED, ("known_speaker_names[]", "a"), ("known_speaker_references[]", "data:audio/wav;base64,%%%")),
            "known_speaker_references",
            "base64",
        ),
        (
            (
                DIARIZED,
                ("known_speaker_names[]", "a"),
                ("known_speaker_references[]", "data:audio/wav;base64," + base64.b64encode(b"x" * 800_000).decode()),
            ),
            "known_speaker_references",
            "over",
        ),
    ],
)
def test_a_bad_reference_is_a_400_naming_the_field(fields: tuple[tuple[str, str], ...], param: str, says: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(form(("model", "m"), *fields), "transcribe")

    assert refused.value.status == 400
    assert refused.value.param == param
    assert says in refused.value.message


def test_a_jobs_options_show_the_references_by_name_not_where_their_clips_lie() -> None:
    from functions.api.routes.jobs import shown_options
    from shared.jobs.retention import TEXT_OPTIONS

    stored = {"speaker_labels": True, "speaker_references": [{"name": "agent", "blob": "j/references/0.wav"}]}

    assert shown_options(stored) == {"speaker_labels": True, "speaker_references": [{"name": "agent"}]}
    # The names are the client's text: a purge removes them with the prompt and hotwords.
    assert "speaker_references" in TEXT_OPTIONS
