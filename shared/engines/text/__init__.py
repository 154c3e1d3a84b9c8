"""The text-model port: translation and summarization of transcripts.

`TextModel` is what the azure-ai-jobs steps need; `make_text_model(settings)` picks the adapter:
Azure OpenAI (`AZURE_OPENAI_ENDPOINT`), any OpenAI-compatible endpoint (`OPENAI_BASE_URL`), or the
offline default that needs no network. Every adapter names its engine and model, and counts the
tokens it used, so the step can record them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from shared.core.config import LlmSettings, Settings
from shared.core.errors import ConfigurationError


class Summary(TypedDict):
    summary: str
    key_points: list[str]


@dataclass
class Usage:
    """Tokens used by one step, summed over its requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, *, prompt_tokens: int, completion_tokens: int) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class TextModel(Protocol):
    """Translates segment texts and summarizes a transcript."""

    engine: str
    """Which kind of engine answered: `azure-openai`, `openai-compatible`, `extractive`, …"""
    model: str
    """The deployment or model name."""
    usage: Usage

    def translate(self, texts: Sequence[str], *, source_language: str, target_language: str) -> list[str]:
        """One translated text per input text, in order (the segment structure is kept)."""
        ...

    def summarize(self, text: str, *, language: str | None) -> Summary:
        """A short summary and key points, in English."""
        ...


@dataclass
class ChatReply:
    data: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatClient(Protocol):
    """One chat completion that answers a JSON object matching `schema`."""

    engine: str
    model: str

    def complete_json(self, messages: list[dict[str, str]], *, schema: dict[str, Any], name: str) -> ChatReply: ...


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
    from shared.engines.text.chat import ChatTextModel

    backend = choose_backend(settings.llm)
    if backend == "azure":
        from shared.engines.text.azure_openai import azure_openai_chat

        return ChatTextModel(
            azure_openai_chat(settings.llm), chunk_tokens=settings.llm.chunk_tokens, should_stop=should_stop
        )
    if backend == "openai":
        from shared.engines.text.openai_compatible import openai_compatible_chat

        return ChatTextModel(
            openai_compatible_chat(settings.llm), chunk_tokens=settings.llm.chunk_tokens, should_stop=should_stop
        )
    if backend == "offline":
        from shared.engines.text.offline import OfflineTextModel

        return OfflineTextModel(settings)
    raise ConfigurationError(f"unknown LLM_BACKEND {backend!r}")
