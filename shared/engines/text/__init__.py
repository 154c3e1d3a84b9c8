"""The text-model port: translation and summarization of transcripts.

`TextModel` is what the azure-ai-jobs steps need; `make_text_model(settings)` picks the adapter:
Azure OpenAI (`AZURE_OPENAI_ENDPOINT`), any OpenAI-compatible endpoint (`OPENAI_BASE_URL`), or the
offline default that needs no network. Every adapter names its engine and model, and counts the
tokens it used, so the step can record them.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.core.config import LlmSettings, Settings
from shared.core.errors import ConfigurationError
from shared.engines.text.chat import ChatTextModel
from shared.engines.text.offline import OfflineTextModel
from shared.engines.text.port import ChatClient, ChatReply, Summary, TextModel, Usage

__all__ = ["ChatClient", "ChatReply", "Summary", "TextModel", "Usage", "choose_backend", "make_text_model"]


def choose_backend(settings: LlmSettings) -> str:
    """`azure`, `openai` or `offline`: the configured override, else whichever endpoint is set."""
    if settings.backend != "auto":
        return settings.backend
    if settings.azure_openai_endpoint:
        return "azure"
    if settings.openai_base_url:
        return "openai"
    return "offline"


def make_text_model(settings: Settings, *, should_stop: Callable[[], bool] | None = None) -> TextModel:
    """The text model the settings ask for (built fresh: usage is counted per step). `should_stop` is
    asked between chunks; when it answers True the work ends with `Cancelled`."""
    backend = choose_backend(settings.llm)
    if backend == "azure":
        from shared.engines.text.azure_openai import azure_openai_chat  # lazy: the openai SDK, only when used

        return ChatTextModel(
            azure_openai_chat(settings.llm), chunk_tokens=settings.llm.chunk_tokens, should_stop=should_stop
        )
    if backend == "openai":
        from shared.engines.text.openai_compatible import openai_compatible_chat  # lazy: the openai SDK

        return ChatTextModel(
            openai_compatible_chat(settings.llm), chunk_tokens=settings.llm.chunk_tokens, should_stop=should_stop
        )
    if backend == "offline":
        return OfflineTextModel(settings)
    raise ConfigurationError(f"unknown LLM_BACKEND {backend!r}")
