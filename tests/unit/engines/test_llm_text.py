"""Pure pieces of the text-model port: token estimates, budget batching, sentence splitting, the
extractive summary, backend choice and the Retry-After wait."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx2 as httpx
import openai
import pytest

from shared.core.config import LlmSettings
from shared.engines.text import choose_backend
from shared.engines.text.offline import extractive_summary
from shared.engines.text.openai_chat import RetryAfterOrBackoff, is_retryable, retry_after_seconds
from shared.engines.text.text_chunks import batch_by_budget, chunk_text, estimate_tokens, split_sentences


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://test/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError("failed", response=response, body=None)


def test_token_estimate_counts_cjk_characters_one_each() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("你好世界") == 4
    assert estimate_tokens("你好 world") == 2 + 2


def test_batches_are_consecutive_within_budget_and_cover_everything() -> None:
    texts = ["x" * 40] * 10  # 10 tokens + 8 framing each
    batches = batch_by_budget(texts, 40)
    assert [list(b) for b in batches] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [list(b) for b in batch_by_budget(["x" * 400, "y"], 10)] == [[0], [1]]  # an oversized text alone
    assert batch_by_budget([], 10) == []


def test_sentences_split_on_latin_and_cjk_ends_and_lines() -> None:
    assert split_sentences("Hello there. How are you?\nfine thanks") == ["Hello there.", "How are you?", "fine thanks"]
    assert split_sentences("一二三。你好世界\uff01天地\uff1f") == ["一二三。", "你好世界\uff01", "天地\uff1f"]
    assert chunk_text("One. Two. Three. Four.", 22) == ["One. Two.", "Three. Four."]


def test_extractive_summary_prefers_central_sentences_in_original_order() -> None:
    text = (
        "The council approved the new budget for public transport. "
        "Buses will run every ten minutes under the new transport budget. "
        "The weather was sunny. "
        "The transport budget also pays for new tram lines. "
        "Someone mentioned a cat."
    )
    result = extractive_summary(text, sentences=2, key_points=3)
    assert result["summary"].split(". ")[0].startswith("The council")
    assert "cat" not in result["summary"] and "weather" not in result["summary"]
    assert len(result["key_points"]) == 3
    assert all("budget" in point for point in result["key_points"][:2])
    assert extractive_summary("   ") == {"summary": "", "key_points": []}


def test_extractive_key_points_are_shortened() -> None:
    long_sentence = " ".join(f"word{n}" for n in range(40)) + "."
    [point] = extractive_summary(long_sentence)["key_points"]
    assert point.endswith(" …") and len(point.split()) == 25


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "offline"),
        ({"OPENAI_BASE_URL": "http://vllm:8000/v1"}, "openai"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "OPENAI_BASE_URL": "http://vllm/v1"}, "azure"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "LLM_BACKEND": "offline"}, "offline"),
    ],
)
def test_backend_choice(values: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "LLM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert choose_backend(LlmSettings.model_validate(values)) == expected


def test_retryable_errors() -> None:
    assert is_retryable(status_error(429)) and is_retryable(status_error(500)) and is_retryable(status_error(503))
    assert not is_retryable(status_error(400)) and not is_retryable(status_error(401))
    assert is_retryable(openai.APITimeoutError(request=httpx.Request("POST", "http://test")))
    assert not is_retryable(ValueError("x"))


def test_wait_honours_retry_after_headers_and_caps_them() -> None:
    wait = RetryAfterOrBackoff(initial=1.0, maximum=8.0)

    def state(error: BaseException, attempt: int) -> Any:
        return SimpleNamespace(outcome=SimpleNamespace(exception=lambda: error), attempt_number=attempt)

    assert retry_after_seconds(status_error(429, {"retry-after": "7"})) == 7.0
    assert retry_after_seconds(status_error(429, {"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    assert retry_after_seconds(status_error(429, {"retry-after": "3600"})) == 120.0
    assert retry_after_seconds(status_error(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert wait(state(status_error(429, {"retry-after": "2"}), 1)) == 2.0
    assert 2.0 <= wait(state(status_error(500), 3)) <= 4.0  # 1 s doubled twice, with jitter down to half
    assert 4.0 <= wait(state(status_error(500), 10)) <= 8.0
