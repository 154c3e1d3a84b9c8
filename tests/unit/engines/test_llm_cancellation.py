"""A cancelled job stops translating or summarizing at the next chunk."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.core.errors import Cancelled
from shared.engines.text import ChatReply
from shared.engines.text.chat import ChatTextModel


class EchoClient:
    engine = "test"
    model = "echo"

    def __init__(self) -> None:
        self.calls = 0

    def complete_json(self, messages: list[dict[str, str]], *, schema: dict[str, Any], name: str) -> ChatReply:
        self.calls += 1
        if name == "translation":
            segments = json.loads(messages[1]["content"])["segments"]
            return ChatReply(data={"segments": [{"id": s["id"], "text": s["text"].upper()} for s in segments]})
        return ChatReply(data={"summary": "s", "key_points": ["k"]})


def stop_after(calls: int, client: EchoClient):
    return lambda: client.calls >= calls


def test_translation_stops_between_batches() -> None:
    client = EchoClient()
    model = ChatTextModel(client, chunk_tokens=8, should_stop=stop_after(1, client))
    with pytest.raises(Cancelled):
        model.translate(["one two three four five six"] * 4, source_language="en", target_language="fr")
    assert client.calls == 1


def test_long_summary_stops_between_chunks() -> None:
    client = EchoClient()
    model = ChatTextModel(client, chunk_tokens=16, should_stop=stop_after(2, client))
    with pytest.raises(Cancelled):
        model.summarize(" ".join(["A sentence of several words here."] * 40), language="en")
    assert client.calls == 2


def test_without_a_stop_check_everything_is_translated() -> None:
    client = EchoClient()
    texts = ["one two three four five six"] * 4
    assert ChatTextModel(client, chunk_tokens=8).translate(texts, source_language="en", target_language="fr") == [
        t.upper() for t in texts
    ]
    assert client.calls > 1
