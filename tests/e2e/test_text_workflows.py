"""Regression through the real local stack: translate_only and summarize_only on an uploaded plain-text
transcript, with an OpenAI-compatible endpoint configured. Every part in every format answers without a
server error: JSON 200 (segments without times), TXT 200, SRT/VTT a clear 422 in the error shape (an
uploaded text has no timings); before the typed results these answered a bare 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningStack
from tests.support.fake_openai import FakeOpenAI, serve_fake_openai

TEXT = (
    "Bonjour à tous. Nous commençons la réunion à neuf heures. "
    "Le budget de l'année prochaine est en hausse de dix pour cent. Merci et à bientôt."
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with serve_fake_openai() as server:
        yield server


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]], fake: FakeOpenAI) -> Iterator[RunningStack]:
    env = {"OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "sk-local", "OPENAI_MODEL": "local-model"}
    with start_stack(components=("api", "router", "azure-ai"), env=env) as running:
        yield running


@pytest.mark.parametrize("workflow", ["translate_only", "summarize_only"])
def test_text_workflow_results_answer_in_every_format_without_a_server_error(
    stack: RunningStack, workflow: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text(TEXT, encoding="utf-8")
    job_id = stack.submit(notes, workflow, source_language="fra")
    job = stack.wait([job_id], timeout=120)[job_id]
    assert job["status"] == "completed", job

    body = stack.results(job_id).json()
    assert body["status"] == "completed"
    if workflow == "translate_only":
        translation = body["translation"]
        assert len(translation["segments"]) == 4
        assert all(segment["start"] is None and segment["end"] is None for segment in translation["segments"])
        assert translation["segments"][0]["text"].startswith("[en] ")
    else:
        assert body["summary"]["summary"]

    for part in ("transcript", "translation"):
        for fmt in ("json", "txt", "srt", "vtt"):
            response = stack.client.get(f"/jobs/{job_id}/results", params={"format": fmt, "part": part})
            assert response.status_code < 500, (part, fmt, response.text)
            if fmt == "json":
                assert response.status_code == 200
            elif response.status_code != 200:
                error = response.json()["error"]
                assert error["code"] in {"untimed_transcript", "not_ready"}, error
                assert error["message"]
    if workflow == "translate_only":
        text = stack.client.get(f"/jobs/{job_id}/results", params={"format": "txt", "part": "translation"})
        assert text.status_code == 200
        assert text.text.count("[en] ") == 4
        srt = stack.client.get(f"/jobs/{job_id}/results", params={"format": "srt", "part": "translation"})
        assert srt.status_code == 422
        assert srt.json()["error"]["code"] == "untimed_transcript"
