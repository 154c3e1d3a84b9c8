"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, OpenAI itself) at OPENAI_BASE_URL."""

from __future__ import annotations

import openai

from shared.core.config import LlmSettings
from shared.core.errors import ConfigurationError
from shared.engines.text.openai_chat import OpenAIChat


def openai_compatible_client(settings: LlmSettings) -> openai.OpenAI:
    if not settings.openai_base_url:
        raise ConfigurationError("OPENAI_BASE_URL is not set")
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "unused"
    return openai.OpenAI(
        base_url=settings.openai_base_url,
        api_key=key,  # self-hosted servers often need none, but the SDK insists on one
        timeout=settings.timeout_seconds,
        max_retries=0,
    )


def openai_compatible_chat(settings: LlmSettings) -> OpenAIChat:
    return OpenAIChat(
        openai_compatible_client(settings),
        engine="openai-compatible",
        model=settings.openai_model,
        max_attempts=settings.max_attempts,
    )
