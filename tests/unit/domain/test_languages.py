"""shared.domain.languages: Whisper codes and ISO 639-3."""

from __future__ import annotations

import pytest

from shared.core.errors import PermanentError
from shared.domain.languages import (
    WHISPER_TO_ISO639_3,
    UnsupportedLanguage,
    is_english,
    to_iso639_3,
    to_whisper,
)


@pytest.mark.parametrize(
    ("whisper", "iso"),
    [("en", "eng"), ("zh", "cmn"), ("yue", "yue"), ("fr", "fra"), ("de", "deu"), ("es", "spa"), ("haw", "haw"),
     ("jw", "jav"), ("ar", "ara"), ("no", "nor")],
)  # fmt: skip
def test_whisper_and_iso_codes_map_both_ways(whisper: str, iso: str) -> None:
    assert to_iso639_3(whisper) == iso
    assert to_whisper(iso) == whisper
    assert to_whisper(whisper) == whisper


def test_table_is_one_to_one_over_all_whisper_languages() -> None:
    assert len(WHISPER_TO_ISO639_3) == 100
    assert len(set(WHISPER_TO_ISO639_3.values())) == 100
    assert all(len(code) == 3 for code in WHISPER_TO_ISO639_3.values())
    for whisper, iso in WHISPER_TO_ISO639_3.items():
        assert to_whisper(iso) == whisper


@pytest.mark.parametrize(
    ("code", "whisper", "iso"),
    [("arb", "ar", "ara"), ("zho", "zh", "cmn"), ("fre", "fr", "fra"), ("EN-us", "en", "eng"),
     ("zh_CN", "zh", "cmn"), (" Eng ", "en", "eng"), ("zsm", "ms", "msa"), ("swh", "sw", "swa")],
)  # fmt: skip
def test_aliases_tags_and_case(code: str, whisper: str, iso: str) -> None:
    assert to_whisper(code) == whisper
    assert to_iso639_3(code) == iso


def test_unknown_language() -> None:
    with pytest.raises(UnsupportedLanguage, match="unsupported language 'klingon'"):
        to_whisper("klingon")
    assert issubclass(UnsupportedLanguage, PermanentError)
    # A three-letter code outside Whisper is already ISO 639-3 (MMS-LID knows ~4000 languages).
    assert to_iso639_3("quy") == "quy"
    with pytest.raises(UnsupportedLanguage):
        to_iso639_3("xx")


@pytest.mark.parametrize(
    ("code", "expected"),
    [("en", True), ("eng", True), ("en-GB", True), ("fra", False), ("cmn", False), ("", False), (None, False),
     ("nope", False)],
)  # fmt: skip
def test_is_english(code: str | None, expected: bool) -> None:
    assert is_english(code) is expected
