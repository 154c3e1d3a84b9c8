"""`languages`, the languages a recording may be in: on POST /jobs and on OpenAI's form, what is
accepted, what it becomes in the job's options, and what is refused."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.datastructures import FormData, Headers, UploadFile

from functions.api.openai_audio import OpenAIError, parse_request
from functions.api.schemas import CreateJobRequest


def audio_form(*fields: tuple[str, str]) -> FormData:
    upload = UploadFile(io.BytesIO(b"RIFF"), filename="clip.wav", headers=Headers({"content-type": "audio/wav"}))
    return FormData([("model", "whisper-1"), *fields, ("file", upload)])


def test_possible_languages_become_iso_639_3_options_of_the_job() -> None:
    body = CreateJobRequest.model_validate(
        {"workflow_type": "full_pipeline", "audio_filename": "a.wav", "languages": ["en", "FR", "fra", "cmn"]}
    )

    assert body.languages == ("eng", "fra", "cmn")
    assert body.options().languages == ("eng", "fra", "cmn")
    assert body.options().stored()["languages"] == ["eng", "fra", "cmn"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"workflow_type": "full_pipeline", "languages": ["en", "xx"]}, "'xx' is not a language code"),
        ({"workflow_type": "full_pipeline", "languages": []}, "at least 1 item"),
        ({"workflow_type": "full_pipeline", "languages": ["en", "fr"], "source_language": "eng"}, "not both"),
        ({"workflow_type": "transcribe_only", "languages": ["en"], "source_language": "eng"}, "not both"),
        ({"workflow_type": "translate_only", "languages": ["en"], "source_language": "fra"}, "audio workflows"),
        ({"workflow_type": "full_pipeline", "languages": ["en"] * 21}, "at most 20 items"),
    ],
)
def test_languages_that_cannot_be_used_are_refused(body: dict[str, Any], message: str) -> None:
    body = {"audio_filename": "a.wav", **body}
    with pytest.raises(ValidationError, match=message):
        CreateJobRequest.model_validate(body)


def test_openai_languages_narrow_identification_and_one_is_the_language() -> None:
    several = parse_request(audio_form(("languages[]", "en"), ("languages[]", "fr")), "transcribe")
    one = parse_request(audio_form(("languages[]", "fr")), "transcribe")
    given = parse_request(audio_form(("language", "de"), ("languages[]", "fr"), ("languages[]", "en")), "transcribe")

    assert (several.language, several.languages) == (None, ("eng", "fra"))
    assert several.job_options()["languages"] == ["eng", "fra"]
    assert (one.language, one.languages) == ("fra", None)
    assert (given.language, given.languages) == ("deu", None)
    assert "languages" not in given.job_options()


def test_an_unknown_openai_language_is_a_400_naming_languages() -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request(audio_form(("languages[]", "en"), ("languages[]", "klingon")), "transcribe")

    assert (refused.value.status, refused.value.param) == (400, "languages")
    assert "klingon" in refused.value.message
