"""Whisper decoding of live turns: quick partial decodes for the words that agree, and the final decode of
a turn (word timestamps, continuing the confirmed words with `prefix`).

A partial decode encodes only as much audio context as the turn has (rounded up, at least 5 s) instead of
Whisper's fixed 30 s window: CTranslate2's encoder takes shorter input, and on a turn of a few seconds it
is 3–5 times faster with the same words (measured on the LibriVox fixtures: identical text on 10 of 12
cuts, one hyphenation apart on the others). Partials only propose words, which two decodes must agree on;
the final decode, whose words are the transcript, keeps the full window."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from gpu_worker.realtime.turns import FinalDecode, PartialDecode, Word
from shared.domain.languages import to_whisper
from shared.engines.speech.streaming import words_of

FULL_WINDOW_FRAMES = 3000
"""Whisper's 30 s window, in 10 ms feature frames."""
MIN_CONTEXT_FRAMES = 500
MAX_TOKENS = 224
PREPENDED = "\"'“¿([{-"
APPENDED = "\"'.。,，!！?？:：”)]}、"
"""faster-whisper's defaults: punctuation joined to the word before or after it."""


class WhisperTurnDecoder:
    def __init__(self, model: Any, *, final_beam_size: int = 1, final_context: str = "turn") -> None:
        """`model`: a loaded faster-whisper `WhisperModel` (the process's one). `final_context`: `turn` encodes
        a final as much context as the turn has, like partials; `window` Whisper's full 30 s."""
        self._model = model
        self._final_beam = final_beam_size
        self._final_context = final_context

    def _encode(self, audio: npt.NDArray[np.float32]) -> tuple[Any, int]:
        """The encoder's output over the turn's own context (at least 5 s), and the turn's feature frames."""
        features = self._model.feature_extractor(audio)
        frames = int(features.shape[-1])
        context = min(FULL_WINDOW_FRAMES, max(MIN_CONTEXT_FRAMES, math.ceil((frames + 50) / 100) * 100))
        features = np.pad(features, ((0, 0), (0, max(0, context - frames))))[:, :context]
        return self._model.encode(features), min(frames, context)

    def _tokenizer(self, encoded: Any, language: str | None) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        code = to_whisper(language) if language else None
        if code is None:
            code = self._model.model.detect_language(encoded)[0][0][0].strip("<|>")
        return Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language=code)

    def partial(self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None) -> PartialDecode:
        model = self._model
        encoded, frames = self._encode(audio)
        tokenizer = self._tokenizer(encoded, language)
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        # With timestamps, as Whisper was trained: on a turn cut mid-speech, decoding without them looped on
        # about half of the cuts of the fixtures, with them on 2 of 41 once repeated segments are dropped.
        request = model.get_prompt(tokenizer, previous, without_timestamps=False)
        result = model.model.generate(
            encoded,
            [request],
            beam_size=1,
            max_length=_token_budget(audio) + len(request),  # CTranslate2 counts the prompt in the length
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        words = words_of(_before_repeats(tokenizer, result[0].sequences_ids[0]))
        # Where each word ends (about 10 ms more on 2 cores): a word is confirmed only where the audio of the
        # decode before held it too — a decoder that runs on past the audio (it says the prompt again, as
        # two decodes of nearly the same audio may alike) puts those words at the audio's very end.
        tokens = tokenizer.encode("".join(words)) if words else []
        aligned = model.find_alignment(tokenizer, [tokens], encoded, frames)[0] if tokens else []
        return PartialDecode(words, _word_ends(words, aligned), tokenizer.language_code)

    def _final_on_turn(
        self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None, prefix: str | None
    ) -> FinalDecode:
        model = self._model
        encoded, frames = self._encode(audio)
        tokenizer = self._tokenizer(encoded, language)
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        # With timestamps the decoder marks where speech ends, and stops there rather than run on.
        request = model.get_prompt(tokenizer, previous, without_timestamps=False, prefix=prefix)
        result = model.model.generate(
            encoded,
            [request],
            beam_size=self._final_beam,
            max_length=_token_budget(audio) + len(request),
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        from faster_whisper.transcribe import merge_punctuations

        # The result holds the prefix's tokens and what the decoder added after them; times are left out.
        tokens = [token for token in result[0].sequences_ids[0] if token < tokenizer.eot]
        if _repetitive(tokenizer.decode(tokens)):
            return self._final_on_window(audio, language=language, prompt=prompt, prefix=prefix)
        aligned = model.find_alignment(tokenizer, [tokens], encoded, frames)[0] if tokens else []
        merge_punctuations(aligned, PREPENDED, APPENDED)  # as faster-whisper does: "Mr" "." → "Mr."
        words = [
            Word(item["word"], float(item["start"]), float(item["end"]), float(item["probability"]))
            for item in aligned
            if item["word"].strip()
        ]
        return FinalDecode(words=words, language=tokenizer.language_code)

    def final(
        self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None, prefix: str | None
    ) -> FinalDecode:
        if self._final_context == "turn" and len(audio) <= FULL_WINDOW_FRAMES * 160:
            return self._final_on_turn(audio, language=language, prompt=prompt, prefix=prefix)
        return self._final_on_window(audio, language=language, prompt=prompt, prefix=prefix)

    def _final_on_window(
        self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None, prefix: str | None
    ) -> FinalDecode:
        segments, info = self._model.transcribe(
            audio,
            language=to_whisper(language) if language else None,
            beam_size=self._final_beam,
            initial_prompt=prompt,
            prefix=prefix,
            condition_on_previous_text=False,
            word_timestamps=True,
            vad_filter=False,
        )
        words = [
            Word(word.word, float(word.start), float(word.end), float(word.probability))
            for segment in segments
            for word in (segment.words or [])
        ]
        return FinalDecode(words=words, language=info.language)


def _word_ends(words: list[str], aligned: list[dict[str, Any]]) -> list[float]:
    """When each word ends: the end of the aligned word that holds its last character (the alignment splits
    words its own way, "ill" "-disposed", and may join punctuation otherwise)."""
    bounds: list[tuple[int, float]] = []
    covered = 0
    for item in aligned:
        covered += len("".join(item["word"].split()))
        bounds.append((covered, float(item["end"])))
    ends: list[float] = []
    wanted = 0
    for word in words:
        wanted += len("".join(word.split()))
        ends.append(next((end for count, end in bounds if count >= wanted), bounds[-1][1] if bounds else 0.0))
    return ends


def _token_budget(audio: npt.NDArray[np.float32]) -> int:
    """At most 8 tokens a second of audio (speech runs at 3–5), and never past Whisper's own limit: a
    decode that runs on repeats itself, and this stops it early."""
    return min(MAX_TOKENS, int(8 * len(audio) / 16000) + 12)


def _repetitive(text: str) -> bool:
    """A decoding loop: text that compresses more than 2.4 times (faster-whisper's test), or the same four
    words twice in one turn (a loop cut short by the token budget is too short to compress)."""
    data = text.encode("utf-8")
    if len(data) > 24 and len(data) / len(zlib.compress(data)) > 2.4:
        return True
    words = [word.strip(".,!?;:\"'").lower() for word in text.split()]
    grams = [tuple(words[at : at + 4]) for at in range(len(words) - 3)]
    return len(grams) != len(set(grams))


def _before_repeats(tokenizer: Any, tokens: list[int]) -> str:
    """A partial decode's text, up to where it starts to repeat itself: its segments (split at timestamp
    tokens) until one says again what an earlier one said, and those words up to a four-word run they
    already had. What is left is only a proposal: two decodes must agree before a word is sent."""
    segments: list[list[int]] = [[]]
    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            if segments[-1]:
                segments.append([])
        elif token < tokenizer.eot:
            segments[-1].append(token)
    kept: list[str] = []
    for segment in segments:
        text = tokenizer.decode(segment)
        said = text.strip().lower()
        if not said or any(said in earlier.strip().lower() for earlier in kept):
            break
        kept.append(text)
    words = "".join(kept).split(" ")
    seen: set[tuple[str, ...]] = set()
    for at in range(len(words) - 3):
        gram = tuple(word.strip(".,!?;:").lower() for word in words[at : at + 4])
        if gram in seen:
            words = words[:at]
            break
        seen.add(gram)
    return " ".join(words)
