"""The API's count of a custom vocabulary's prompt tokens (shared/engines/speech/prompt_tokens.py): Whisper's own
multilingual tokenizer, read from the file that ships beside the bundled model, counting as the
transcription step does (each text with its leading space, prompt and hotwords together)."""

from __future__ import annotations

from shared.engines.speech.prompt_tokens import prompt_tokens
from shared.engines.speech.transcriber import MAX_PROMPT_TOKENS


def test_prompt_and_hotwords_are_counted_together() -> None:
    prompt = prompt_tokens("Release notes for Zylqor.", None)
    hotwords = prompt_tokens(None, ["Zylqor", "Kubernetes"])
    both = prompt_tokens("Release notes for Zylqor.", ["Zylqor", "Kubernetes"])
    assert prompt is not None and hotwords is not None
    assert 4 <= prompt <= 12  # a handful of BPE pieces, not characters
    assert both == prompt + hotwords
    assert prompt_tokens("   ", []) == 0


def test_the_limit_is_reached_by_tokens_not_characters() -> None:
    short_words = prompt_tokens("word " * 150, None)
    assert short_words is not None and short_words <= MAX_PROMPT_TOKENS  # 750 characters fit
    rare = prompt_tokens("Zylqor Qxv Wrblt " * 40, None)  # fewer characters, many more pieces
    assert rare is not None and rare > MAX_PROMPT_TOKENS
