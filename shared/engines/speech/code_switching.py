"""Code-switching: a recording whose language changes from one stretch of speech to the next (a Spanish
customer and an English agent; a meeting that moves between languages).

Whisper decodes a window in one language: given a recording of alternating languages whole, it writes
every turn in the language it chose (translating some turns, dropping others). Here the speech is first
cut into stretches at its pauses (Silero VAD), Whisper's language detection scores each stretch alone,
and one language per stretch is chosen for the whole sequence at once (`assign_languages`): a short,
unclear stretch takes its neighbours' language unless its own evidence outweighs the cost of a switch.
Runs of stretches in one language are then transcribed one run at a time in that language, and every
segment carries the language it was transcribed in.

Only changes at pauses are followed: a language switch inside one breath (a borrowed phrase) stays in
the language of the stretch around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.domain.languages import to_iso639_3, to_whisper
from shared.domain.speaker_turns import language_time
from shared.engines.audio import SAMPLE_RATE, AudioArray
from shared.engines.speech.language_id import Scores, find_speech, whisper_scores
from shared.engines.speech.transcriber import TranscriptionCancelled

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from shared.engines.speech.transcriber import Transcriber

STRETCH_PAUSE_SECONDS = 0.3
"""A pause this long may separate two languages (a turn change); shorter ones stay inside a stretch."""
LID_SECONDS = 30.0
"""Whisper hears 30 s at once: a longer stretch is scored in pieces of at most this."""
EVIDENCE_SECONDS = 1.0
"""A stretch's evidence for a language is the log of its score times its length in these units: a long
stretch outweighs the cost of switching, a short one ("OK", "sí") seldom does."""
SWITCH_COST = 1.0
"""What one change of language costs in the choice (nats of evidence): a stretch between two of another
language takes its own only if its evidence for it beats theirs by twice this."""
PAD_SECONDS = 0.2
"""Audio kept around a run when it is transcribed, never past the middle of the pause to the next run."""
LID_PAD_SECONDS = 0.2
SURE_SCORE = 0.7
"""Below this, Whisper's detection of a stretch is unclear (it often prefers Latin for Spanish, Thai for
Japanese): the stretch is decoded in each candidate language and the decodes' likelihoods decide."""
CANDIDATES = 3
CANDIDATE_SCORE = 0.05
NO_TEXT_LOGPROB = -5.0
_FLOOR = 1e-4


@dataclass(frozen=True)
class Stretch:
    """A stretch of speech between pauses, in seconds, and the language scores Whisper gave it alone."""

    start: float
    end: float
    scores: Scores

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Run:
    """Consecutive stretches given one language: transcribed together, in that language."""

    start: float
    end: float
    language: str
    stretches: int


def restrict(scores: Mapping[str, float], languages: Sequence[str] | None) -> Scores:
    """The scores of `languages` only (ISO 639-3), renormalised to sum to 1; all of them without."""
    if not languages:
        return dict(scores)
    allowed = {language: max(0.0, scores.get(language, 0.0)) for language in dict.fromkeys(languages)}
    mass = sum(allowed.values())
    return {language: (value / mass if mass > 0 else 1.0 / len(allowed)) for language, value in allowed.items()}


def assign_languages(
    stretches: Sequence[Stretch], *, switch_cost: float = SWITCH_COST, unit_seconds: float = EVIDENCE_SECONDS
) -> list[str]:
    """One language per stretch, chosen for the whole sequence at once (Viterbi): each stretch's evidence
    is the log of its score weighted by its length (in `unit_seconds`), and each change of language
    costs `switch_cost`. The candidates are the languages some stretch ranks first."""
    if not stretches:
        return []
    candidates = list(dict.fromkeys(_first(stretch.scores) for stretch in stretches))

    def evidence(stretch: Stretch, language: str) -> float:
        weight = stretch.seconds / unit_seconds
        return weight * math.log(max(stretch.scores.get(language, 0.0), _FLOOR))

    best = [evidence(stretches[0], language) for language in candidates]
    back: list[list[int]] = []
    for stretch in stretches[1:]:
        step_back = []
        scores = []
        for index, language in enumerate(candidates):
            came_from = max(
                range(len(candidates)),
                key=lambda previous: best[previous] - (switch_cost if previous != index else 0.0),
            )
            step_back.append(came_from)
            scores.append(best[came_from] - (switch_cost if came_from != index else 0.0) + evidence(stretch, language))
        back.append(step_back)
        best = scores
    state = max(range(len(candidates)), key=lambda index: best[index])
    path = [state]
    for step_back in reversed(back):
        state = step_back[state]
        path.append(state)
    return [candidates[index] for index in reversed(path)]


def _first(scores: Mapping[str, float]) -> str:
    return max(scores, key=lambda code: scores[code])


def language_runs(stretches: Sequence[Stretch], languages: Sequence[str], *, duration: float) -> list[Run]:
    """Consecutive stretches of one language as runs, each widened by PAD_SECONDS where the pause allows
    (never past the middle of the pause to the next run). The first run starts at the start of the audio
    and the last ends at its end: a recording in one language is one run, the whole audio, transcribed
    as it would be without code-switching (in the language found)."""
    runs: list[Run] = []
    for stretch, language in zip(stretches, languages, strict=True):
        if runs and runs[-1].language == language:
            last = runs[-1]
            runs[-1] = Run(last.start, stretch.end, language, last.stretches + 1)
        else:
            runs.append(Run(stretch.start, stretch.end, language, 1))
    widened = []
    for index, run in enumerate(runs):
        start = max((runs[index - 1].end + run.start) / 2, run.start - PAD_SECONDS) if index else 0.0
        final = index + 1 == len(runs)
        end = duration if final else min((run.end + runs[index + 1].start) / 2, run.end + PAD_SECONDS)
        widened.append(Run(start, end, run.language, run.stretches))
    return widened


def settle(scores: Scores, fits: Mapping[str, tuple[float, int]]) -> Scores:
    """Scores of an unclear stretch after decoding it in each candidate language: `fits` holds each
    decode's mean token log-probability and token count. Each candidate's evidence is the log of its
    detection score plus its mean log-probability times the decodes' mean length (the same length for
    all, so a short decode gains nothing by being short); the result is their softmax."""
    if not fits:
        return dict(scores)
    length = sum(tokens for _, tokens in fits.values()) / len(fits)
    evidence = {
        language: math.log(max(scores.get(language, 0.0), _FLOOR)) + mean * max(1.0, length)
        for language, (mean, _) in fits.items()
    }
    top = max(evidence.values())
    weights = {language: math.exp(value - top) for language, value in evidence.items()}
    total = sum(weights.values())
    return {language: weight / total for language, weight in weights.items()}


def unclear_candidates(scores: Mapping[str, float]) -> list[str]:
    """The languages worth decoding an unclear stretch in (none when its first is sure enough)."""
    ranked = sorted(scores, key=lambda code: scores[code], reverse=True)
    if not ranked or scores[ranked[0]] >= SURE_SCORE:
        return []
    return [code for code in ranked[:CANDIDATES] if scores[code] >= CANDIDATE_SCORE]


def find_stretches(
    samples: AudioArray,
    *,
    score: Callable[[AudioArray], Scores],
    fit: Callable[[AudioArray, str], tuple[float, int]] | None = None,
    languages: Sequence[str] | None = None,
) -> list[Stretch]:
    """The speech of `samples` cut at pauses of STRETCH_PAUSE_SECONDS, each stretch (or each 30-s piece of
    a longer one) scored alone, the scores narrowed to `languages` when given. With `fit` (a decode's
    mean token log-probability and token count in a language), a stretch whose first language scores
    under SURE_SCORE is decoded in each candidate and its scores `settle`d."""
    speech = find_speech(samples, min_silence_ms=round(STRETCH_PAUSE_SECONDS * 1000))
    duration = len(samples) / SAMPLE_RATE
    stretches = []
    for number, (start, end) in enumerate(speech):
        pieces = max(1, math.ceil((end - start) / LID_SECONDS - 1e-9))
        length = (end - start) / pieces
        # Whisper names the language more surely with some quiet around the speech (as when it hears a
        # clip alone): each stretch is scored with up to LID_PAD_SECONDS of the pauses beside it.
        before = (speech[number - 1][1] + start) / 2 if number else 0.0
        after = (end + speech[number + 1][0]) / 2 if number + 1 < len(speech) else duration
        for index in range(pieces):
            low, high = start + index * length, start + (index + 1) * length
            heard_from = max(before, low - LID_PAD_SECONDS) if index == 0 else low
            heard_to = min(after, high + LID_PAD_SECONDS) if index == pieces - 1 else high
            heard = samples[round(heard_from * SAMPLE_RATE) : round(heard_to * SAMPLE_RATE)]
            found = restrict(score(heard), languages)
            if fit is not None and (candidates := unclear_candidates(found)):
                found = settle(found, {language: fit(heard, language) for language in candidates})
            stretches.append(Stretch(low, high, found))
    return stretches


def transcribe_code_switching(
    transcriber: Transcriber,
    samples: AudioArray,
    *,
    languages: Sequence[str] | None = None,
    on_progress: Callable[[float], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Transcribe 16 kHz mono `samples` whose language may change at pauses: the result of
    `Transcriber.transcribe`, with `language` on every segment, `language` the one spoken longest, and
    `stretches` / `runs` counted. `languages` (ISO 639-3) narrows the languages a stretch may be in;
    other keyword options (prompt, hotwords, should_stop) go to each run's transcription."""
    started = time.perf_counter()
    duration = len(samples) / SAMPLE_RATE
    allowed = [to_iso639_3(language) for language in languages] if languages else None
    model = transcriber.model

    should_stop = options.get("should_stop")

    def score(audio: AudioArray) -> Scores:
        # Asked between stretches too: a long recording's detection takes a while before any decoding.
        if should_stop is not None and should_stop():
            raise TranscriptionCancelled()
        return whisper_scores(model.get(), audio)

    def fit(audio: AudioArray, language: str) -> tuple[float, int]:
        return decode_fit(model.get(), audio, language, beam_size=model.config.beam_size)

    stretches = find_stretches(samples, score=score, fit=fit, languages=allowed)
    chosen = assign_languages(stretches)
    runs = language_runs(stretches, chosen, duration=duration)
    segments: list[dict[str, Any]] = []
    found: dict[str, Any] | None = None
    spoken = sum(run.end - run.start for run in runs) or 1.0
    done = 0.0
    for run in runs:
        piece = samples[round(run.start * SAMPLE_RATE) : round(run.end * SAMPLE_RATE)]

        def progress(fraction: float, *, before: float = done, share: float = (run.end - run.start) / spoken) -> None:
            if on_progress is not None:
                on_progress(min(1.0, before + fraction * share))

        found = transcriber.transcribe(piece, language=run.language, on_progress=progress, **options)
        for segment in found["segments"]:
            segments.append(_shifted(segment, run.start, run.language))
        done += (run.end - run.start) / spoken
    if found is None:
        # No speech: transcribed whole, as without code-switching, so the answer has its usual shape.
        found = transcriber.transcribe(samples, on_progress=on_progress, **options)
        segments = [{**segment, "language": found["language"]} for segment in found["segments"]]
    talk = language_time(segments)
    main = talk[0]["language"] if talk else found["language"]
    if on_progress is not None:
        on_progress(1.0)
    return {
        **found,
        "language": main,
        "language_probability": None,
        "duration": round(duration, 3),
        "text": " ".join(segment["text"] for segment in segments if segment["text"]),
        "segments": segments,
        "languages": talk,
        "stretches": len(stretches),
        "runs": len(runs),
        "processing_seconds": round(time.perf_counter() - started, 3),
    }


def decode_fit(model: WhisperModel, audio: AudioArray, language: str, *, beam_size: int) -> tuple[float, int]:
    """How well Whisper decodes `audio` in `language`: the mean log-probability of its tokens, and how
    many there were (no text at all: a low fit of one token)."""
    segments, _ = model.transcribe(
        audio,
        language=to_whisper(language),
        beam_size=beam_size,
        vad_filter=False,
        without_timestamps=True,
        condition_on_previous_text=False,
    )
    total = 0.0
    tokens = 0
    for segment in segments:
        count = max(1, len(segment.tokens))
        total += float(segment.avg_logprob) * count
        tokens += count
    return (total / tokens, tokens) if tokens else (NO_TEXT_LOGPROB, 1)


def _shifted(segment: Mapping[str, Any], offset: float, language: str) -> dict[str, Any]:
    moved = dict(segment)
    moved["start"] = round(float(segment["start"]) + offset, 3)
    moved["end"] = round(float(segment["end"]) + offset, 3)
    moved["words"] = [
        {**word, "start": round(float(word["start"]) + offset, 3), "end": round(float(word["end"]) + offset, 3)}
        for word in segment.get("words") or []
    ]
    moved["language"] = to_iso639_3(language)
    return moved


__all__ = [
    "Run",
    "Stretch",
    "assign_languages",
    "find_stretches",
    "language_runs",
    "restrict",
    "settle",
    "transcribe_code_switching",
    "unclear_candidates",
]
