"""Offline translation and summary on the fixture clips: what the offline default produces and how
long it takes. Prints one block per clip (transcript, English translation, summary, timings).

    .venv/bin/python -m bench.offline_text [clip.wav ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shared.core.config import Settings
from shared.engines.speech.transcriber import Transcriber
from shared.engines.speech.translation import translate_speech
from shared.engines.text.offline import extractive_summary

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"


def main(argv: list[str]) -> int:
    settings = Settings()
    clips = [Path(a) for a in argv] or sorted([*FIXTURES.glob("fr/*.wav"), *FIXTURES.glob("zh/*.wav")])
    transcriber = Transcriber(settings.whisper, settings.model_cache_dir)
    started = time.perf_counter()
    transcriber.load()
    print(f"whisper {settings.whisper.model} loaded in {time.perf_counter() - started:.1f} s")
    for clip in clips:
        started = time.perf_counter()
        transcript = transcriber.transcribe(clip)
        transcribed = time.perf_counter() - started
        texts, details = translate_speech(
            clip, transcript["segments"], language=transcript["language"], settings=settings
        )
        english = "\n".join(texts)
        started = time.perf_counter()
        summary = extractive_summary(english)
        summarized = time.perf_counter() - started
        print(f"\n{clip.relative_to(FIXTURES) if clip.is_relative_to(FIXTURES) else clip} [{transcript['language']}]")
        print(f"  transcript  ({transcribed:.2f} s): {transcript['text']}")
        for segment, text in zip(transcript["segments"], texts, strict=True):
            span = f"[{segment['start']:.2f}-{segment['end']:.2f}]"
            print(f"  translation {span} ({details['translate_seconds']:.2f} s): {text}")
        print(f"  summary     ({summarized * 1000:.1f} ms): {summary['summary']}")
        print(f"  key points: {summary['key_points']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
