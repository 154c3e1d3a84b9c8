"""Translation and summarization over any chat model that answers JSON (Azure OpenAI, an
OpenAI-compatible endpoint): segment-aligned translation batches and a map-reduce summary, each
request within the token budget."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from shared.core.errors import Cancelled, TransientError
from shared.engines.text.port import ChatClient, Summary, Usage
from shared.engines.text.text_chunks import batch_by_budget, chunk_text, estimate_tokens

TRANSLATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "segments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "text": {"type": "string"}},
                "required": ["id", "text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["segments"],
    "additionalProperties": False,
}

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "key_points": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "key_points"],
    "additionalProperties": False,
}

_TRANSLATE_INSTRUCTIONS = (
    "You translate transcript segments from {source} to {target}. The user sends a JSON object with "
    '"segments", each with an "id" and a "text". Answer with the same ids, each segment translated on its '
    "own: never merge, split, drop or reorder segments, and keep a segment empty if it is empty. Translate "
    "faithfully; do not add explanations."
)
_SUMMARY_INSTRUCTIONS = (
    "You summarize a speech transcript{language}. Answer in English with a concise summary (at most five "
    "sentences) and three to seven key points, each one short sentence. Use only what the transcript says."
)
_REDUCE_INSTRUCTIONS = (
    "You are given summaries of consecutive parts of one speech transcript. Combine them into one concise "
    "summary in English (at most six sentences) and three to seven key points for the whole transcript."
)


class ChatTextModel:
    """A `TextModel` over a `ChatClient`."""

    def __init__(self, client: ChatClient, *, chunk_tokens: int, should_stop: Callable[[], bool] | None = None) -> None:
        self._client = client
        self._chunk_tokens = chunk_tokens
        self._should_stop = should_stop
        self.engine = client.engine
        self.model = client.model
        self.usage = Usage()

    def translate(self, texts: Sequence[str], *, source_language: str, target_language: str) -> list[str]:
        instructions = _TRANSLATE_INSTRUCTIONS.format(source=source_language, target=target_language)
        translated: list[str] = []
        for batch in batch_by_budget(texts, self._chunk_tokens):
            self._check_stop()
            payload = {"segments": [{"id": index, "text": texts[index]} for index in batch]}
            data = self._ask(instructions, json.dumps(payload, ensure_ascii=False), TRANSLATION_SCHEMA, "translation")
            by_id = {item["id"]: item["text"] for item in data.get("segments", []) if isinstance(item, dict)}
            missing = [index for index in batch if index not in by_id]
            if missing:
                raise TransientError(f"the model left out {len(missing)} of {len(batch)} segments")
            translated.extend(str(by_id[index]).strip() for index in batch)
        return translated

    def _check_stop(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise Cancelled("the job was cancelled")

    def summarize(self, text: str, *, language: str | None) -> Summary:
        about = f" (language: {language})" if language else ""
        instructions = _SUMMARY_INSTRUCTIONS.format(language=about)
        if estimate_tokens(text) <= self._chunk_tokens:
            return _summary(self._ask(instructions, text, SUMMARY_SCHEMA, "summary"))
        parts = []
        for chunk in chunk_text(text, self._chunk_tokens):
            self._check_stop()
            parts.append(_summary(self._ask(instructions, chunk, SUMMARY_SCHEMA, "summary")))
        while len(parts) > 1:
            combined = [json.dumps(part, ensure_ascii=False) for part in parts]
            groups = batch_by_budget(combined, self._chunk_tokens)
            if len(groups) == len(combined):  # no two fit together: merge them all rather than loop
                groups = [range(len(combined))]
            parts = [
                _summary(
                    self._ask(_REDUCE_INSTRUCTIONS, "\n".join(combined[g.start : g.stop]), SUMMARY_SCHEMA, "summary")
                )
                for g in groups
            ]
        return parts[0]

    def _ask(self, instructions: str, content: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": instructions}, {"role": "user", "content": content}]
        reply = self._client.complete_json(messages, schema=schema, name=name)
        self.usage.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        return reply.data


def _summary(data: dict[str, Any]) -> Summary:
    points = data.get("key_points")
    if not isinstance(data.get("summary"), str) or not isinstance(points, list):
        raise TransientError("the model's summary did not match the schema")
    return {
        "summary": data["summary"].strip(),
        "key_points": [str(point).strip() for point in points if str(point).strip()],
    }
