"""PII redaction on text and timed words (shared/engines/pii.py): Presidio's recognizers over a pipeline that
never downloads anything, spoken numbers and addresses, and how the words and timings are masked."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import spacy

from shared.engines.pii import PLACEHOLDERS, Redactor, build_analyzer, default_redactor


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return default_redactor()


@pytest.fixture(scope="module")
def without_names() -> Redactor:
    return Redactor(build_analyzer(None))


def redact(redactor: Redactor, text: str, language: str = "eng") -> str:
    return redactor.redact_text(text, language=language)[0]


def timed(*words: str) -> list[dict[str, Any]]:
    return [
        {"start": float(index), "end": index + 0.5, "word": word, "probability": 0.9 - index / 100, "speaker": "A"}
        for index, word in enumerate(words)
    ]


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Call me on 202-555-0143, thanks.", "Call me on [PHONE], thanks."),
        ("Call me on two oh two, five five five, zero one four three.", "Call me on [PHONE]."),
        ("Call me Macon 202-5-5-5-0143", "Call me Macon [PHONE]"),
        ("Call two oh two double five five zero one four three now", "Call [PHONE] now"),
        ("My card is 4539 1488 0343 6467.", "My card is [CREDIT_CARD]."),
        ("card four five three nine one four eight eight zero three four three six four six seven ok",
         "card [CREDIT_CARD] ok"),
        ("Mail john.smith@example.com. Or meet me at noon.", "Mail [EMAIL]. Or meet me at noon."),
        ("write to john dot smith at example dot com any time", "write to [EMAIL] any time"),
        ("My IBAN is GB82 WEST 1234 5698 7654 32 thanks", "My IBAN is [ID_NUMBER] thanks"),
        ("policy 4-1-1-1-1-1-1-1-1-1-1-1-1 please", "policy [ID_NUMBER] please"),
        ("We met at 10 and left at 11 with 3 people.", "We met at 10 and left at 11 with 3 people."),
    ],
)  # fmt: skip
def test_numbers_and_addresses_are_masked_by_kind(redactor: Redactor, text: str, expected: str) -> None:
    assert redact(redactor, text) == expected


def test_findings_point_at_what_was_masked_and_never_hold_it(redactor: Redactor) -> None:
    text = "Ring 202-555-0143 or mail ann@example.org."
    redacted, findings = redactor.redact_text(text, language="eng")

    assert redacted == "Ring [PHONE] or mail [EMAIL]."
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [
        ("PHONE_NUMBER", "202-555-0143"),
        ("EMAIL_ADDRESS", "ann@example.org"),
    ]
    assert [f.placeholder for f in findings] == ["[PHONE]", "[EMAIL]"]
    assert all("0143" not in repr(f) and "ann" not in repr(f) for f in findings)


def test_names_are_masked_by_the_packaged_model(redactor: Redactor, without_names: Redactor) -> None:
    assert redactor.finds_names
    assert redact(redactor, "Hello, this is Alice Johnson from accounts.") == "Hello, this is [PERSON] from accounts."
    assert not without_names.finds_names
    assert (
        redact(without_names, "Hello, this is Alice Johnson, 202-555-0143.") == "Hello, this is Alice Johnson, [PHONE]."
    )


def test_other_languages_get_the_pattern_recognizers_but_not_the_english_name_model(redactor: Redactor) -> None:
    assert (
        redact(redactor, "Ma carte : 4539 1488 0343 6467. Jean Dupont", "fra")
        == "Ma carte : [CREDIT_CARD]. Jean Dupont"
    )
    assert redact(redactor, "Schreib an anna@example.de", "deu") == "Schreib an [EMAIL]"


def test_text_without_pii_comes_back_unchanged_whitespace_and_all(redactor: Redactor) -> None:
    text = "  Nothing here.\n\tJust  words, 42 of them.  "
    assert redactor.redact_text(text, language="eng") == (text, [])
    assert redactor.redact_text("", language="eng") == ("", [])


# --- words and segments --------------------------------------------------------------------------


def test_one_placeholder_word_spans_the_masked_words_time(redactor: Redactor) -> None:
    words = timed("call", "me", "on", "two", "oh", "two", "555", "-0143.", "Thanks.")
    redacted = redactor.redact_words(words, language="eng")

    assert [w["word"] for w in redacted] == ["call", "me", "on", "[PHONE].", "Thanks."]
    placeholder = redacted[3]
    assert (placeholder["start"], placeholder["end"]) == (words[3]["start"], words[7]["end"])
    assert placeholder["probability"] == min(w["probability"] for w in words[3:8])
    assert placeholder["speaker"] == "A"  # extra keys of the first masked word are kept
    assert redacted[:3] == words[:3] and redacted[4] == words[8]
    assert words[3]["word"] == "two"  # the input is not changed


def test_segment_text_stays_the_join_of_its_words_where_it_was(redactor: Redactor) -> None:
    words = timed("mail", "ann@example.org", "or", "ring", "202-555-0143")
    segments = [
        {"id": 0, "start": 0.0, "end": 5.0, "text": " ".join(w["word"] for w in words), "words": words},
        # Whisper's text and words differ here ("5-5-5" is "5", "-5", "-5"): the text is redacted on its own.
        {
            "id": 1,
            "start": 5.0,
            "end": 9.0,
            "text": "call 202-5-5-5-0143.",
            "words": timed("call", "202", "-5", "-5", "-5", "-0143."),
        },
        {"id": 2, "start": 9.0, "end": 10.0, "text": "Card 4539 1488 0343 6467", "words": None},
    ]
    redacted = redactor.redact_transcript(segments, language="eng")

    assert redacted[0]["text"] == "mail [EMAIL] or ring [PHONE]"
    assert redacted[0]["text"] == " ".join(w["word"] for w in redacted[0]["words"])
    assert redacted[1]["text"] == "call [PHONE]."
    assert [w["word"] for w in redacted[1]["words"]] == ["call", "[PHONE]."]
    assert redacted[2] == {"id": 2, "start": 9.0, "end": 10.0, "text": "Card [CREDIT_CARD]", "words": None}
    assert [(s["id"], s["start"], s["end"]) for s in redacted] == [(s["id"], s["start"], s["end"]) for s in segments]


def test_every_kind_has_a_bracketed_placeholder() -> None:
    assert set(PLACEHOLDERS.values()) == {"[CREDIT_CARD]", "[PHONE]", "[EMAIL]", "[ID_NUMBER]", "[PERSON]"}


# --- offline -------------------------------------------------------------------------------------


def test_nothing_is_downloaded_with_the_network_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **_kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(spacy.cli, "download", refuse)  # Presidio's way of fetching a missing model

    fresh = Redactor(build_analyzer(None))  # a new e-mail recognizer: its suffix list is loaded now
    assert redact(fresh, "Mail ann@example.co.uk or bob@mail.example.com") == "Mail [EMAIL] or [EMAIL]"
    assert redact(fresh, "not an address: ann@example.invalidtld") == "not an address: ann@example.invalidtld"
    assert attempts == []


def test_each_segment_of_a_code_switching_transcript_is_masked_in_its_own_language(redactor: Redactor) -> None:
    # The English name model runs on the English segment only; the French segment gets the patterns,
    # whatever the transcript's main language is.
    segments = [
        {"start": 0.0, "end": 3.0, "text": "Hello, this is Alice Johnson from accounts.", "language": "eng"},
        {"start": 3.5, "end": 6.0, "text": "Ma carte : 4539 1488 0343 6467. Jean Dupont", "language": "fra"},
    ]
    redacted = redactor.redact_transcript(segments, language="fra")
    assert redacted[0]["text"] == "Hello, this is [PERSON] from accounts."
    assert redacted[1]["text"] == "Ma carte : [CREDIT_CARD]. Jean Dupont"
    assert [segment["language"] for segment in redacted] == ["eng", "fra"]
