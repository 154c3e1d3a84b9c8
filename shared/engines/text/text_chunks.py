"""Cutting a transcript into pieces that fit a token budget: segment-aligned batches for
translation, sentence-aligned chunks for summaries. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s*|\s*\n\s*")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate that errs high: about four characters a token for alphabetic
    scripts, one token per CJK character."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def batch_by_budget(texts: Sequence[str], budget: int) -> list[range]:
    """Consecutive index ranges of `texts` whose estimated tokens stay within `budget`; a single
    text over the budget gets a batch of its own."""
    batches: list[range] = []
    start, used = 0, 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text) + 8  # the per-segment JSON framing
        if index > start and used + cost > budget:
            batches.append(range(start, index))
            start, used = index, 0
        used += cost
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def split_sentences(text: str) -> list[str]:
    """Sentences (or lines), split after . ! ? and their CJK forms, and at line breaks."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def chunk_text(text: str, budget: int) -> list[str]:
    """`text` as chunks of whole sentences within `budget` estimated tokens each."""
    sentences = split_sentences(text)
    return [" ".join(sentences[r.start : r.stop]) for r in batch_by_budget(sentences, budget)]
