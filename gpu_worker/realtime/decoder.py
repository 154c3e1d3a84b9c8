"""Whisper decoding of live turns: quick partial decodes (greedy, no timestamps) for the words that agree,
and the final decode of a turn (word timestamps, continuing the confirmed words with `prefix`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gpu_worker.realtime.session import FinalDecode, Word
from shared.domain.languages import to_whisper


class WhisperTurnDecoder:
    def __init__(self, model: Any, *, final_beam_size: int = 1) -> None:
        """`model`: a loaded faster-whisper `WhisperModel` (the process's one)."""
        self._model = model
        self._final_beam = final_beam_size

    def partial(self, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None) -> tuple[str, str]:
        segments, info = self._model.transcribe(
            audio,
            language=to_whisper(language) if language else None,
            beam_size=1,
            initial_prompt=prompt,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        text = "".join(segment.text for segment in segments)
        return text, info.language

    def final(
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
