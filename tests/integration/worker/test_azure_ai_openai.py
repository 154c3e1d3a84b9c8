"""The Azure OpenAI and OpenAI-compatible adapters against a local server speaking their REST shapes:
deployment path, api-version, api-key header, structured output, Retry-After, content filter,
invalid requests, timeouts, token usage and the map-reduce summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.core.config import LlmSettings, Settings
from shared.core.errors import PermanentError, TransientError
from shared.engines.text import make_text_model
from shared.engines.text.chat import ChatTextModel
from tests.support.fake_openai import (
    DEPLOYMENT,
    FakeOpenAI,
    Reply,
    completion,
    content_filter_error,
    error,
    serve_fake_openai,
)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with serve_fake_openai() as server:
        yield server


def azure_settings(fake: FakeOpenAI, **overrides: object) -> Settings:
    llm = LlmSettings.model_validate(
        {
            "AZURE_OPENAI_ENDPOINT": fake.url,
            "AZURE_OPENAI_API_KEY": fake.api_key,
            "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
            "AZURE_OPENAI_API_VERSION": "2024-10-21",
            "LLM_TIMEOUT_SECONDS": 5,
            "LLM_MAX_ATTEMPTS": 3,
            **overrides,
        }
    )
    return Settings(llm=llm)


def test_azure_translation_keeps_segments_and_speaks_the_azure_shape(fake: FakeOpenAI) -> None:
    model = make_text_model(azure_settings(fake))
    assert (model.engine, model.model) == ("azure-openai", DEPLOYMENT)

    texts = ["Bonjour le monde.", "", "Un deux trois."]
    assert model.translate(texts, source_language="fra", target_language="en") == [
        "[en] Bonjour le monde.",
        "",
        "[en] Un deux trois.",
    ]

    [request] = fake.requests
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert request.query["api-version"] == ["2024-10-21"]
    assert request.headers["api-key"] == fake.api_key
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["response_format"]["json_schema"]["strict"] is True
    assert "fra" in request.body["messages"][0]["content"]
    assert model.usage.as_dict() == {"requests": 1, "prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}


def test_429_waits_for_retry_after_then_succeeds(fake: FakeOpenAI) -> None:
    fake.script.append(Reply(429, error("429", "Rate limit is exceeded. Try again in 1 second."), {"retry-after": "1"}))
    model = make_text_model(azure_settings(fake))

    summary = model.summarize("Bonjour le monde. Un deux trois.", language="fra")

    assert summary["summary"].startswith("Summary: ")
    assert summary["key_points"] == ["first point", "second point"]
    assert len(fake.requests) == 2
    assert fake.requests[1].at - fake.requests[0].at >= 0.95
    assert model.usage.requests == 1  # the throttled request used no tokens


def test_5xx_retries_until_the_attempts_run_out_then_is_transient(fake: FakeOpenAI) -> None:
    fake.script.extend(
        Reply(503, error("ServiceUnavailable", "The service is busy."), {"retry-after-ms": "10"}) for _ in range(3)
    )
    model = make_text_model(azure_settings(fake))
    with pytest.raises(TransientError, match="HTTP 503: The service is busy"):
        model.summarize("text", language="en")
    assert len(fake.requests) == 3


def test_content_filter_is_permanent_with_the_service_message(fake: FakeOpenAI) -> None:
    fake.script.append(content_filter_error())
    model = make_text_model(azure_settings(fake))
    with pytest.raises(PermanentError, match=r"content filter: The response was filtered .* content management policy"):
        model.translate(["something"], source_language="fra", target_language="en")
    assert len(fake.requests) == 1


def test_filtered_completion_is_permanent(fake: FakeOpenAI) -> None:
    fake.script.append(Reply(200, completion("", finish="content_filter")))
    model = make_text_model(azure_settings(fake))
    with pytest.raises(PermanentError, match="content filter"):
        model.summarize("text", language="en")


def test_invalid_request_is_permanent(fake: FakeOpenAI) -> None:
    fake.script.append(Reply(400, error("context_length_exceeded", "This model's maximum context length is 8192.")))
    model = make_text_model(azure_settings(fake))
    with pytest.raises(PermanentError, match="HTTP 400: This model's maximum context length is 8192"):
        model.summarize("text", language="en")
    assert len(fake.requests) == 1


def test_wrong_key_is_permanent(fake: FakeOpenAI) -> None:
    model = make_text_model(azure_settings(fake, AZURE_OPENAI_API_KEY="another-key"))
    with pytest.raises(PermanentError, match="HTTP 401"):
        model.summarize("text", language="en")


def test_timeout_from_settings(fake: FakeOpenAI) -> None:
    fake.script.append(Reply(200, completion({"summary": "late", "key_points": []}), delay=1.5))
    model = make_text_model(azure_settings(fake, LLM_TIMEOUT_SECONDS=0.3, LLM_MAX_ATTEMPTS=1))
    with pytest.raises(TransientError, match="unreachable"):
        model.summarize("text", language="en")


def test_long_transcript_is_batched_by_tokens_and_summarized_map_reduce(fake: FakeOpenAI) -> None:
    model = make_text_model(azure_settings(fake, LLM_CHUNK_TOKENS=60))
    assert isinstance(model, ChatTextModel)
    sentences = [f"Sentence number {n} talks about topic {n} at some length." for n in range(12)]

    translated = model.translate(sentences, source_language="en", target_language="de")
    assert translated == [f"[en] {s}" for s in sentences]
    translate_requests = len(fake.requests)
    assert translate_requests >= 3

    summary = model.summarize(" ".join(sentences), language="en")
    assert summary["key_points"]
    summary_requests = fake.requests[translate_requests:]
    assert len(summary_requests) >= 3  # several map requests, then at least one reduce
    assert "summaries of consecutive parts" in summary_requests[-1].body["messages"][0]["content"]
    assert model.usage.requests == len(fake.requests)


def test_openai_compatible_endpoint_with_json_object_fallback(fake: FakeOpenAI) -> None:
    llm = LlmSettings.model_validate(
        {"OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "sk-local", "OPENAI_MODEL": "qwen2.5-7b-instruct"}
    )
    fake.script.append(Reply(400, error("invalid_request_error", "response_format json_schema is not supported")))
    fake.script.append(Reply(200, completion({"summary": "A greeting.", "key_points": ["hello"]})))
    model = make_text_model(Settings(llm=llm))
    assert (model.engine, model.model) == ("openai-compatible", "qwen2.5-7b-instruct")

    assert model.summarize("Hello world.", language="en") == {"summary": "A greeting.", "key_points": ["hello"]}

    first, second = fake.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer sk-local"
    assert first.body["response_format"]["type"] == "json_schema"
    assert second.body["response_format"] == {"type": "json_object"}
    assert second.body["model"] == "qwen2.5-7b-instruct"
