"""One long recording as several chunks transcribed side by side, then joined into one transcript.

`plan_chunks` cuts a file longer than twice the target length into chunks of about the target
length, each cut placed in a pause that Silero VAD (faster-whisper's) finds near the ideal point.
Only a short stretch around each ideal cut is decoded and scanned, so planning a four-hour upload
neither decodes nor holds all of it. Neighbouring chunks overlap by `overlap_seconds` around each cut,
so a word that a cut without a pause would split is heard whole by both sides.

`stitch` joins the chunks' transcripts (in the shape `Transcriber.transcribe` returns) in order: every
time is moved by its chunk's offset, and each word is kept by the chunk that owns its moment, the seam
being the middle of the overlap. A word dropped on one side of a seam is kept after all when the other
side has no word at that moment, so no word is lost or doubled at a seam. The file gets one
language: the one most of its audio was transcribed in.

How a workflow runs a long file with these: one step calls `plan_chunks(path, settings.whisper.chunk_seconds)`;
each chunk step decodes only its window (`shared.engines.audio.decode_window(path, start, end - start)`) and
passes the samples to `Transcriber.transcribe` with the file's one language; the join step calls
`stitch(results, [start for start, _ in chunks])`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.engines.audio import SAMPLE_RATE, AudioArray, decode_window, probe

DEFAULT_OVERLAP_SECONDS = 2.0
"""Twice the longest word that a cut without a pause can split: each side hears it whole."""
PAUSE_SEARCH_SECONDS = 30.0
"""How far from the ideal cut a pause is looked for (at most half the target on either side)."""
MIN_PAUSE_SECONDS = 0.3
"""Silence that counts as a pause to cut in: longer than the gaps between words of running speech."""

_NO_SPACE_LANGUAGES = frozenset({"cmn", "zho", "yue", "jpn", "tha", "lao", "mya", "khm", "bod"})
"""Languages written without spaces between words: a rebuilt segment's words are joined with nothing."""

_SAME_MOMENT_SECONDS = 0.1
"""Two chunks' timestamps for one word differ by a few hundredths of a second; distinct words are further apart."""

Chunk = tuple[float, float]


def plan_chunks(
    audio: Path | str | AudioArray,
    target_seconds: float,
    *,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
) -> list[Chunk]:
    """The (start, end) seconds of each chunk of `audio` (a file, or 16 kHz mono samples), in order.

    A recording no longer than twice `target_seconds` is one chunk. A longer one is cut about every
    `target_seconds`, each cut in the pause nearest the ideal point (a hard cut where none is near),
    and neighbouring chunks share `overlap_seconds` around each cut.
    """
    if target_seconds <= 0:
        raise ValueError("target_seconds must be positive")
    samples = None if isinstance(audio, (str, Path)) else audio
    duration = probe(audio).duration_seconds if isinstance(audio, (str, Path)) else len(audio) / SAMPLE_RATE
    if not duration or duration <= 2 * target_seconds:
        return [(0.0, float(duration or 0.0))]
    search = min(PAUSE_SEARCH_SECONDS, target_seconds / 2)
    cuts: list[float] = []
    previous = 0.0
    while duration - previous > 1.5 * target_seconds:
        ideal = previous + target_seconds
        low = max(previous + target_seconds / 2, ideal - search)
        high = min(duration - target_seconds / 2, ideal + search)
        if samples is not None:
            stretch = samples[round(low * SAMPLE_RATE) : round(high * SAMPLE_RATE)]
        else:
            assert isinstance(audio, (str, Path))
            stretch = decode_window(audio, low, high - low)
        cut = choose_cut(find_pauses(stretch, offset=low), ideal=ideal, low=low, high=high)
        cuts.append(cut)
        previous = cut
    half = overlap_seconds / 2
    bounds = [0.0, *cuts, duration]
    return [
        (max(0.0, start - half) if index else 0.0, min(duration, end + half))
        for index, (start, end) in enumerate(itertools.pairwise(bounds))
    ]


def find_pauses(samples: AudioArray, *, offset: float = 0.0) -> list[tuple[float, float]]:
    """The silences of at least MIN_PAUSE_SECONDS between speech in `samples`, as file seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=round(MIN_PAUSE_SECONDS * 1000), speech_pad_ms=0)
    speech = get_speech_timestamps(np.ascontiguousarray(samples, dtype=np.float32), options)
    if not speech:
        return [(offset, offset + len(samples) / SAMPLE_RATE)]
    edges = [0, *(value for span in speech for value in (span["start"], span["end"])), len(samples)]
    return [
        (offset + start / SAMPLE_RATE, offset + end / SAMPLE_RATE)
        for start, end in zip(edges[::2], edges[1::2], strict=True)
        if end > start
    ]


def choose_cut(pauses: Sequence[tuple[float, float]], *, ideal: float, low: float, high: float) -> float:
    """The middle of the pause nearest `ideal` inside [low, high], or `ideal` itself if none is."""
    inside = [(max(start, low), min(end, high)) for start, end in pauses if min(end, high) - max(start, low) > 0]
    if not inside:
        return ideal
    start, end = min(inside, key=lambda pause: (abs((pause[0] + pause[1]) / 2 - ideal), -(pause[1] - pause[0])))
    return (start + end) / 2


def stitch(chunk_transcripts: Sequence[Mapping[str, Any]], offsets: Sequence[float]) -> dict[str, Any]:
    """One transcript of the whole file from its chunks' transcripts, each starting at its offset.

    Each chunk's `duration` is the length of audio it was given; where a chunk ends after the next
    one starts, the seam between them is the middle of that overlap.
    """
    if not chunk_transcripts or len(chunk_transcripts) != len(offsets):
        raise ValueError("stitch needs one offset per chunk transcript, and at least one chunk")
    order = sorted(range(len(offsets)), key=lambda index: offsets[index])
    chunks = [chunk_transcripts[index] for index in order]
    starts = [float(offsets[index]) for index in order]
    ends = [start + float(chunk.get("duration") or 0.0) for start, chunk in zip(starts, chunks, strict=True)]
    seams = [(min(ends[index], starts[index + 1]) + ends[index]) / 2 for index in range(len(chunks) - 1)]
    seams = [max(seam, starts[index + 1]) for index, seam in enumerate(seams)]
    language = _file_language(chunks)
    timed = [_shifted_segments(chunk, start) for chunk, start in zip(chunks, starts, strict=True)]

    kept: list[list[dict[str, Any]]] = []
    for index, segments in enumerate(timed):
        low = seams[index - 1] if index else -np.inf
        high = seams[index] if index < len(seams) else np.inf
        kept.append(_keep_owned(segments, low, high, language))
    for index in range(len(seams)):
        _restore_unheard(timed[index], kept[index], kept[index + 1], side="before", seam=seams[index])
        _restore_unheard(timed[index + 1], kept[index + 1], kept[index], side="after", seam=seams[index])
        _drop_doubled(kept[index], kept[index + 1], before_end=ends[index], after_start=starts[index + 1])

    segments = [segment for part in kept for segment in part]
    segments.sort(key=lambda segment: (segment["start"], segment["end"]))
    for segment in segments:
        segment["words"].sort(key=lambda word: (word["start"], word["end"]))
        if segment.pop("_rebuilt", False):
            segment["text"] = _join_words(segment["words"], str(segment.get("language") or language))
    first = chunks[0]
    winner = [chunk for chunk in chunks if chunk.get("language") == language]
    return {
        "language": language,
        "language_probability": round(
            float(np.mean([float(chunk.get("language_probability") or 0.0) for chunk in winner])), 4
        ),
        "duration": round(max(ends), 3),
        "text": " ".join(segment["text"] for segment in segments if segment["text"]),
        "segments": segments,
        "model": first.get("model"),
        "device": first.get("device"),
        "compute_type": first.get("compute_type"),
        "batch_size": first.get("batch_size"),
        "processing_seconds": round(sum(float(chunk.get("processing_seconds") or 0.0) for chunk in chunks), 3),
        "chunks": len(chunks),
    }


def _file_language(chunks: Sequence[Mapping[str, Any]]) -> str:
    """The language of most of the audio (each chunk's length weighted by its confidence)."""
    votes: dict[str, float] = {}
    for chunk in chunks:
        language = str(chunk.get("language") or "")
        weight = float(chunk.get("duration") or 0.0) * float(chunk.get("language_probability") or 1.0)
        votes[language] = votes.get(language, 0.0) + weight
    return max(votes.items(), key=lambda item: item[1])[0]


def _shifted_segments(chunk: Mapping[str, Any], offset: float) -> list[dict[str, Any]]:
    return [
        {
            **segment,
            "start": round(float(segment["start"]) + offset, 3),
            "end": round(float(segment["end"]) + offset, 3),
            "words": [
                {
                    **word,
                    "start": round(float(word["start"]) + offset, 3),
                    "end": round(float(word["end"]) + offset, 3),
                }
                for word in segment.get("words") or []
            ],
        }
        for segment in chunk.get("segments") or []
    ]


def _middle(item: Mapping[str, Any]) -> float:
    return (float(item["start"]) + float(item["end"])) / 2


def _keep_owned(segments: list[dict[str, Any]], low: float, high: float, language: str) -> list[dict[str, Any]]:
    """The segments, and the words, whose middle falls in [low, high)."""
    kept = []
    for segment in segments:
        words = segment["words"]
        if not words:
            if low <= _middle(segment) < high:
                kept.append({**segment, "words": []})
            continue
        owned = [word for word in words if low <= _middle(word) < high]
        if not owned:
            continue
        piece = {**segment, "words": owned}
        if len(owned) != len(words):
            piece.update(start=owned[0]["start"], end=owned[-1]["end"], _rebuilt=True)
        kept.append(piece)
    return kept


def _restore_unheard(
    source: list[dict[str, Any]],
    kept: list[dict[str, Any]],
    other: list[dict[str, Any]],
    *,
    side: str,
    seam: float,
) -> None:
    """Put back a word of `source` that fell on the wrong side of `seam` when `other` (the chunk on
    that side) has no word at its moment: the other chunk did not hear it, so dropping it would lose it."""
    heard = [word for segment in other for word in segment["words"]]
    for segment in source:
        for word in segment["words"]:
            middle = _middle(word)
            crossed = middle >= seam if side == "before" else middle < seam
            if not crossed or any(_overlaps(word, other_word) for other_word in heard):
                continue
            home = _segment_for(kept, segment)
            if home is None:
                home = {**segment, "words": [], "_rebuilt": True}
                kept.append(home)
            home["words"].append(word)
            home["start"] = min(float(home["start"]), float(word["start"]))
            home["end"] = max(float(home["end"]), float(word["end"]))
            home["_rebuilt"] = True
            heard.append(word)


def _drop_doubled(
    before: list[dict[str, Any]], after: list[dict[str, Any]], *, before_end: float, after_start: float
) -> None:
    """Keep one copy of a word both neighbours kept. Each chunk times the same word a little
    differently, so when the seam falls between the two copies' middles (by milliseconds, even)
    each chunk owns its own copy. The copy heard further from its chunk's edge, with more audio
    around it, stays."""
    earlier = [(segment, word) for segment in before for word in segment["words"] if float(word["end"]) > after_start]
    for segment in after:
        for word in list(segment["words"]):
            if float(word["start"]) >= before_end:
                break
            twin = next(
                ((home, other) for home, other in earlier if _overlaps(other, word) and _same_word(other, word)),
                None,
            )
            if twin is None:
                continue
            home, other = twin
            earlier.remove(twin)
            if before_end - _middle(other) >= _middle(word) - after_start:
                _remove_word(segment, word)
            else:
                _remove_word(home, other)
    for pieces in (before, after):
        pieces[:] = [piece for piece in pieces if piece["words"] or not piece.get("_emptied")]


def _same_word(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    def letters(word: Mapping[str, Any]) -> str:
        return "".join(char for char in str(word["word"]).lower() if char.isalnum())

    return letters(first) == letters(second) != ""


def _remove_word(segment: dict[str, Any], word: Mapping[str, Any]) -> None:
    segment["words"] = [kept for kept in segment["words"] if kept is not word]
    segment["_rebuilt"] = True
    if segment["words"]:
        segment["start"], segment["end"] = segment["words"][0]["start"], segment["words"][-1]["end"]
    else:
        segment["_emptied"] = True


def _segment_for(kept: list[dict[str, Any]], segment: Mapping[str, Any]) -> dict[str, Any] | None:
    for piece in kept:
        same_text = piece.get("text") == segment.get("text")
        if same_text and any(word in segment["words"] for word in piece["words"]):
            return piece
    return None


def _overlaps(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """The two words take up the same moment (a zero-length word: its middle is near the other's)."""
    if min(float(first["end"]), float(second["end"])) > max(float(first["start"]), float(second["start"])):
        return True
    return abs(_middle(first) - _middle(second)) < _SAME_MOMENT_SECONDS


def _join_words(words: Sequence[Mapping[str, Any]], language: str) -> str:
    separator = "" if language in _NO_SPACE_LANGUAGES else " "
    return separator.join(str(word["word"]) for word in words).strip()


__all__ = ["DEFAULT_OVERLAP_SECONDS", "Chunk", "choose_cut", "find_pauses", "plan_chunks", "stitch"]
