"""Language codes: Whisper's (mostly ISO 639-1) and the ISO 639-3 codes SpeechFlow reports.

SpeechFlow speaks ISO 639-3 to its users, as the seed does and as MMS-LID labels are (`eng`, `cmn`,
`yue`, `fra`, …). Whisper names its languages with two-letter codes plus a few of its own (`haw`,
`yue`, `jw`), and uses `zh` for Mandarin. Where ISO 639-3 has a macrolanguage and an individual
language (Arabic `ara`/`arb`, Malay `msa`/`zsm`, …), the macrolanguage is reported and the individual
code accepted on input, so MMS labels and user input both map back to a Whisper language.
"""

from __future__ import annotations

from shared.core.errors import PermanentError

WHISPER_TO_ISO639_3: dict[str, str] = {
    "en": "eng", "zh": "cmn", "de": "deu", "es": "spa", "ru": "rus", "ko": "kor", "fr": "fra",
    "ja": "jpn", "pt": "por", "tr": "tur", "pl": "pol", "ca": "cat", "nl": "nld", "ar": "ara",
    "sv": "swe", "it": "ita", "id": "ind", "hi": "hin", "fi": "fin", "vi": "vie", "he": "heb",
    "uk": "ukr", "el": "ell", "ms": "msa", "cs": "ces", "ro": "ron", "da": "dan", "hu": "hun",
    "ta": "tam", "no": "nor", "th": "tha", "ur": "urd", "hr": "hrv", "bg": "bul", "lt": "lit",
    "la": "lat", "mi": "mri", "ml": "mal", "cy": "cym", "sk": "slk", "te": "tel", "fa": "fas",
    "lv": "lav", "bn": "ben", "sr": "srp", "az": "aze", "sl": "slv", "kn": "kan", "et": "est",
    "mk": "mkd", "br": "bre", "eu": "eus", "is": "isl", "hy": "hye", "ne": "nep", "mn": "mon",
    "bs": "bos", "kk": "kaz", "sq": "sqi", "sw": "swa", "gl": "glg", "mr": "mar", "pa": "pan",
    "si": "sin", "km": "khm", "sn": "sna", "yo": "yor", "so": "som", "af": "afr", "oc": "oci",
    "ka": "kat", "be": "bel", "tg": "tgk", "sd": "snd", "gu": "guj", "am": "amh", "yi": "yid",
    "lo": "lao", "uz": "uzb", "fo": "fao", "ht": "hat", "ps": "pus", "tk": "tuk", "nn": "nno",
    "mt": "mlt", "sa": "san", "lb": "ltz", "my": "mya", "bo": "bod", "tl": "tgl", "mg": "mlg",
    "as": "asm", "tt": "tat", "haw": "haw", "ln": "lin", "ha": "hau", "ba": "bak", "jw": "jav",
    "su": "sun", "yue": "yue",
}  # fmt: skip
"""Every language of Whisper large-v3 (the base model knows all but `yue`)."""

_ISO639_3_TO_WHISPER: dict[str, str] = {iso: whisper for whisper, iso in WHISPER_TO_ISO639_3.items()}

_ALIASES: dict[str, str] = {
    # individual languages inside a macrolanguage (MMS-LID uses several of these)
    "arb": "ar", "zsm": "ms", "pes": "fa", "prs": "fa", "nob": "no", "swh": "sw", "uzn": "uz",
    "ekk": "et", "lvs": "lv", "khk": "mn", "npi": "ne", "pbu": "ps", "pbt": "ps", "als": "sq",
    "azj": "az", "azb": "az", "ydd": "yi", "plt": "mg", "fil": "tl",
    # the Chinese macrolanguage and ISO 639-2/B codes people still type
    "zho": "zh", "chi": "zh", "fre": "fr", "ger": "de", "dut": "nl", "gre": "el", "cze": "cs",
    "rum": "ro", "slo": "sk", "ice": "is", "arm": "hy", "geo": "ka", "baq": "eu", "mac": "mk",
    "alb": "sq", "per": "fa", "bur": "my", "tib": "bo", "wel": "cy", "may": "ms", "mao": "mi",
    # Whisper's own spelling of Javanese next to the ISO one
    "jv": "jw",
}  # fmt: skip


class UnsupportedLanguage(PermanentError):
    """The language is not one Whisper knows."""

    def __init__(self, code: str) -> None:
        super().__init__(f"unsupported language {code!r}: give an ISO 639-3 code such as eng, cmn or fra")
        self.code = code


def to_whisper(code: str) -> str:
    """The Whisper language code for an ISO 639-3, ISO 639-1 or Whisper code (`cmn` → `zh`, `eng` → `en`)."""
    key = _normalise(code)
    if key in WHISPER_TO_ISO639_3:
        return key
    if key in _ISO639_3_TO_WHISPER:
        return _ISO639_3_TO_WHISPER[key]
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnsupportedLanguage(code)


def to_iso639_3(code: str) -> str:
    """The ISO 639-3 code SpeechFlow reports for any accepted code (`zh` → `cmn`, `yue` → `yue`).

    A three-letter code that no table lists is passed through lower-cased: it is already ISO 639-3
    (MMS-LID knows many more languages than Whisper).
    """
    key = _normalise(code)
    try:
        return WHISPER_TO_ISO639_3[to_whisper(key)]
    except UnsupportedLanguage:
        if len(key) == 3 and key.isalpha():
            return key
        raise


def is_english(code: str | None) -> bool:
    """Whether `code` names English in any of the accepted spellings (`en`, `eng`, `en-US`)."""
    if not code:
        return False
    try:
        return to_whisper(code) == "en"
    except UnsupportedLanguage:
        return False


def same_language(language: str, other: str) -> bool:
    """Whether two codes name one language in any of the accepted spellings (`fr`, `fra`, `fr-CA`); codes
    Whisper does not know are compared as written (`und`)."""
    try:
        return to_whisper(language) == to_whisper(other)
    except UnsupportedLanguage:
        return language.lower() == other.lower()


def _normalise(code: str) -> str:
    # BCP 47 tags such as en-US or zh_CN carry the language first.
    return code.strip().lower().replace("_", "-").split("-", 1)[0]
