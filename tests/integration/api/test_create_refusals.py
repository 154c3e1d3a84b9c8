"""Input an outside probe got past POST /jobs and the OpenAI front (issue 20.6, 20.10), refused at once
with a clear 422 (400 in OpenAI's shape), on SQLite and on PostgreSQL, which stores no NUL in text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.core.config import Settings
from tests.support.pipeline import TINY_WAV, Stack, build_stack


@pytest.fixture
def stack(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    yield built
    built.client.close()
    built.runtime.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source_language", "xx"),
        ("source_language", "qaa"),  # ISO 639-3's reserved range: three letters, but no language
        ("target_language", "zz"),
    ],
)
def test_an_unknown_language_code_is_refused_at_create_with_the_supported_ones(
    stack: Stack, field: str, value: str
) -> None:
    body: dict[str, Any] = {"workflow_type": "full_pipeline", "audio_filename": "a.wav", field: value}
    if field == "source_language":
        body["workflow_type"] = "transcribe_only"
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert repr(value) in error["message"] and "en, es" in error["message"] and "fr" in error["message"]
    assert stack.client.get("/jobs").json()["total"] == 0, "nothing was created"


@pytest.mark.parametrize("code", ["fr", "fra", "en-US", "ZH", "cmn"])
def test_known_language_codes_in_any_accepted_spelling_still_pass(stack: Stack, code: str) -> None:
    body = {"workflow_type": "transcribe_only", "audio_filename": "a.wav", "source_language": code}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt": "Kubernetes\x00KEDA"},
        {"hotwords": ["Speech\x00Flow"]},
        {"audio_filename": "a\x00.wav"},
    ],
    ids=["prompt", "hotwords", "audio_filename"],
)
def test_a_nul_character_is_refused_before_the_database_sees_it(stack: Stack, extra: dict[str, Any]) -> None:
    body = {"workflow_type": "transcribe_only", "audio_filename": "a.wav", "source_language": "en", **extra}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["error"]["message"]
    assert stack.client.get("/jobs").json()["total"] == 0


@pytest.mark.parametrize("field", ["prompt", "keywords[]", "model"])
def test_the_openai_front_refuses_a_nul_character_in_its_text_fields(stack: Stack, field: str) -> None:
    data = {"model": "whisper-1", "language": "en", field: "a\x00b"}
    response = stack.client.post(
        "/v1/audio/transcriptions", data=data, files={"file": ("a.wav", TINY_WAV, "audio/wav")}
    )
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]["message"]
    assert stack.client.get("/jobs").json()["total"] == 0
