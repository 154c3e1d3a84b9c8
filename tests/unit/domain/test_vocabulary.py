"""Custom vocabulary: how hotwords become faster-whisper's phrase and how prompt tokens are counted."""

from __future__ import annotations

from shared.engines.speech.transcriber import MAX_PROMPT_TOKENS, PromptTooLong, count_prompt_tokens, hotwords_text


def spaces_split(text: str) -> list[int]:
    """A stand-in tokenizer: one token per space-separated piece, the leading space its own token."""
    return [0] * (len(text.split(" ")))


def test_hotwords_become_one_phrase() -> None:
    assert hotwords_text(["Aoife", " Kubernetes ", ""]) == "Aoife, Kubernetes"
    assert hotwords_text([]) is None
    assert hotwords_text(None) is None
    assert hotwords_text(["  "]) is None


def test_prompt_and_hotwords_count_together_each_with_its_leading_space() -> None:
    assert count_prompt_tokens(spaces_split, prompt="two words", hotwords=None) == 3
    assert count_prompt_tokens(spaces_split, prompt="two words", hotwords="Aoife, Niamh") == 6
    assert count_prompt_tokens(spaces_split, prompt="  ", hotwords=None) == 0


def test_too_long_is_a_permanent_error_that_says_the_limit() -> None:
    error = PromptTooLong(MAX_PROMPT_TOKENS + 7)
    assert "230 tokens" in str(error)
    assert "at most 223" in str(error)
    assert error.tokens == 230
