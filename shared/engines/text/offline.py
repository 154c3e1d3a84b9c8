"""The offline default: no network, nothing to configure.

Summaries are extractive (TextRank over TF-IDF sentence similarity): the key points are the
transcript's own most central sentences. Text translation has no offline engine good enough to ship
(see docs/TEXT_MODELS.md); speech translation to English comes from Whisper itself
(`shared.engines.speech.translation`), which the azure-ai step uses when the job has audio.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

from shared.core.config import Settings
from shared.core.errors import PermanentError
from shared.engines.text.port import Summary, Usage
from shared.engines.text.text_chunks import split_sentences

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7af]")
_STOPWORDS = frozenset(
    {
        *("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "he", "her"),
        *("his", "i", "in", "is", "it", "its", "of", "on", "or", "our", "she", "so", "that", "the", "their"),
        *("them", "then", "there", "they", "this", "to", "was", "we", "were", "what", "when", "which", "who"),
        *("will", "with", "you", "your"),
    }
)

SUMMARY_SENTENCES = 3
MAX_KEY_POINTS = 5
KEY_POINT_WORDS = 24


class OfflineTextModel:
    """Extractive summaries; translation only where the step has audio for Whisper."""

    engine = "extractive"
    model = "textrank-tfidf"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.usage = Usage()

    def translate(self, texts: Sequence[str], *, source_language: str, target_language: str) -> list[str]:
        raise PermanentError(
            "the offline default translates speech only (Whisper, from the job's audio); this job has no audio "
            "to translate from. Set AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL to translate text."
        )

    def summarize(self, text: str, *, language: str | None) -> Summary:
        return extractive_summary(text)


def extractive_summary(text: str, *, sentences: int = SUMMARY_SENTENCES, key_points: int = MAX_KEY_POINTS) -> Summary:
    """The most central sentences, in their original order, as the summary; the top-ranked ones,
    shortened, as key points."""
    candidates = split_sentences(text)
    if not candidates:
        return {"summary": "", "key_points": []}
    scores = textrank(candidates)
    ranked = sorted(range(len(candidates)), key=lambda index: (-scores[index], index))
    chosen = sorted(ranked[:sentences])
    return {
        "summary": " ".join(candidates[index] for index in chosen),
        "key_points": [_shorten(candidates[index]) for index in ranked[:key_points]],
    }


def textrank(sentences: Sequence[str], *, damping: float = 0.85, iterations: int = 50) -> list[float]:
    """PageRank over the sentence graph weighted by TF-IDF cosine similarity."""
    vectors = _tfidf([_terms(sentence) for sentence in sentences])
    count = len(sentences)
    weights = [[_cosine(vectors[i], vectors[j]) if i != j else 0.0 for j in range(count)] for i in range(count)]
    totals = [sum(row) for row in weights]
    scores = [1.0 / count] * count
    for _ in range(iterations):
        scores = [
            (1 - damping) / count
            + damping * sum(weights[j][i] / totals[j] * scores[j] for j in range(count) if totals[j] > 0)
            for i in range(count)
        ]
    # Sentences linked to nothing keep only the teleport share; favour the longer, more informative ones.
    return [score + 1e-6 * len(sentence) for score, sentence in zip(scores, sentences, strict=True)]


def _terms(sentence: str) -> list[str]:
    lowered = sentence.lower()
    words = [word for word in _WORD.findall(lowered) if word not in _STOPWORDS and not _CJK.search(word)]
    han = [char for char in lowered if _CJK.match(char)]
    bigrams = [a + b for a, b in itertools.pairwise(han)]  # CJK has no spaces: character bigrams
    return words + bigrams + han


def _tfidf(documents: list[list[str]]) -> list[dict[str, float]]:
    frequency = Counter(term for document in documents for term in set(document))
    total = len(documents)
    vectors = []
    for document in documents:
        counts = Counter(document)
        vectors.append({term: n * (math.log((1 + total) / (1 + frequency[term])) + 1) for term, n in counts.items()})
    return vectors


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(value * b.get(term, 0.0) for term, value in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def _shorten(sentence: str) -> str:
    words = sentence.split()
    if len(words) <= KEY_POINT_WORDS:
        return sentence
    return " ".join(words[:KEY_POINT_WORDS]) + " …"
