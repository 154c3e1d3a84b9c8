"""The text-model port: what a translation or summary engine offers, and what a chat endpoint offers it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict


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
