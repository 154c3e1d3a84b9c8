"""Word error rate against a reference transcript, on normalised text.

Normalisation is deliberately plain: lower case, Unicode NFKC, apostrophes dropped inside words
("don't" → "dont"), every other punctuation mark a word break. Numbers are compared as they come
("10" and "ten" differ), so a score measures the transcript a user would read.
"""

from __future__ import annotations

import re
import unicodedata

# ASCII apostrophe, right single quotation mark, modifier letter apostrophe, grave accent.
_APOSTROPHES = re.compile("['\u2019\u02bc`]")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    text = "".join(" " if unicodedata.category(char).startswith(("P", "S")) else char for char in text)
    return " ".join(text.split())


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over tokens: substitutions, deletions and insertions each cost 1."""
    previous = list(range(len(hypothesis) + 1))
    for row, ref_token in enumerate(reference, start=1):
        current = [row]
        for column, hyp_token in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[column] + 1,
                    current[column - 1] + 1,
                    previous[column - 1] + (ref_token != hyp_token),
                )
            )
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word errors divided by the number of reference words, both texts normalised."""
    ref_words = normalise(reference).split()
    if not ref_words:
        raise ValueError("the reference is empty")
    return edit_distance(ref_words, normalise(hypothesis).split()) / len(ref_words)


def close_enough(reference: str, hypothesis: str, limit: float) -> bool:
    """Whether `hypothesis` is within `limit` WER of `reference`, or off by a single word: on a clip of eight
    words one wrong word is 12.5 %, and the bundled model's int8 kernels differ by a word between CPUs
    ("ill-disposed" heard as "ill-sposed" on one AMD EPYC, right on another)."""
    ref_words = normalise(reference).split()
    errors = edit_distance(ref_words, normalise(hypothesis).split())
    return errors <= max(1.0, limit * len(ref_words))


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, spaces ignored: the usual measure for Chinese."""
    ref_chars = list(normalise(reference).replace(" ", ""))
    if not ref_chars:
        raise ValueError("the reference is empty")
    return edit_distance(ref_chars, list(normalise(hypothesis).replace(" ", ""))) / len(ref_chars)
