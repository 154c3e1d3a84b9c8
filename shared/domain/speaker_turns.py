"""Who said what: joining a transcript with speaker turns, and merging the transcripts of split channels.

Pure functions over plain dicts shaped like the results (`shared/domain/results.py`): a segment has `start`,
`end`, `text`, `words` and gains `speaker` (and `channel` for split channels); a word has `start`,
`end`, `word`, `probability` and gains `speaker`. A turn is `{start, end, speaker}` as a diarizer
gives it (`shared/engines/speech/diarization.py`). Inputs are never changed; every function returns new dicts.

The join (`attribute_speakers`) goes word by word because a Whisper segment often spans a change of
speaker: each word gets the speaker it overlaps most, segments are cut where the speaker changes, and
the diarizer's arbitrary labels become "A", "B", … in order of first appearance.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

Segment = dict[str, Any]
Turn = Mapping[str, Any]

SOLE_SPEAKER = "A"
"""The label every word gets when the diarizer found no speech to attribute: one unknown speaker."""


def speaker_label(index: int) -> str:
    """The short label of the `index`-th speaker (0-based): A … Z, then AA, AB, … as spreadsheets count."""
    if index < 0:
        raise ValueError("speaker index must not be negative")
    label = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        label = chr(ord("A") + remainder) + label
    return label


def speaker_at(start: float, end: float, turns: Sequence[Turn]) -> str | None:
    """The speaker of the span [start, end]: the one whose turns overlap it most; when none overlaps
    (a word in a pause the diarizer left out), the speaker of the nearest turn. None without turns."""
    if not turns:
        return None
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end, float(turn["end"])) - max(start, float(turn["start"]))
        if shared > 0:
            overlap[turn["speaker"]] = overlap.get(turn["speaker"], 0.0) + shared
    if overlap:
        # Ties go to the speaker met first, so the result does not depend on dict internals.
        return max(overlap, key=lambda speaker: overlap[speaker])
    middle = (start + end) / 2
    nearest = min(turns, key=lambda turn: _distance(middle, float(turn["start"]), float(turn["end"])))
    return str(nearest["speaker"])


def _distance(point: float, start: float, end: float) -> float:
    if point < start:
        return start - point
    if point > end:
        return point - end
    return 0.0


def assign_words(segments: Iterable[Mapping[str, Any]], turns: Sequence[Turn]) -> list[Segment]:
    """Copies of the segments in which every word carries `speaker`, and every segment the speaker
    that holds most of its words' time (or of its own span, when it has no words)."""
    fallback = None if turns else SOLE_SPEAKER
    result: list[Segment] = []
    for segment in segments:
        words = [
            {**word, "speaker": speaker_at(float(word["start"]), float(word["end"]), turns) or fallback}
            for word in segment.get("words") or []
        ]
        copy = dict(segment)
        if "words" in segment:
            copy["words"] = words
        copy["speaker"] = _majority(words) if words else _segment_speaker(segment, turns) or fallback
        result.append(copy)
    return result


def _segment_speaker(segment: Mapping[str, Any], turns: Sequence[Turn]) -> str | None:
    if segment.get("start") is None or segment.get("end") is None:
        return None
    return speaker_at(float(segment["start"]), float(segment["end"]), turns)


def _majority(words: Sequence[Mapping[str, Any]]) -> str | None:
    seconds: dict[str, float] = {}
    for word in words:
        if word.get("speaker") is not None:
            # A zero-length word still counts, a little, so a segment of such words has a speaker.
            length = max(float(word["end"]) - float(word["start"]), 1e-3)
            seconds[word["speaker"]] = seconds.get(word["speaker"], 0.0) + length
    return max(seconds, key=lambda speaker: seconds[speaker]) if seconds else None


def split_at_speaker_changes(segments: Iterable[Mapping[str, Any]]) -> list[Segment]:
    """Segments cut wherever the speaker of consecutive words changes, each piece with its speaker.

    A piece spans its words; the first piece keeps the segment's start and the last its end, so the
    pieces cover what the segment covered. The text of a piece is its words joined. Segments whose
    words all share one speaker come back unchanged but for `speaker`; `id`, when segments have one,
    is renumbered so ids stay consecutive.
    """
    result: list[Segment] = []
    for segment in segments:
        words = list(segment.get("words") or [])
        runs = _runs(words)
        if len(runs) <= 1:
            piece = dict(segment)
            if runs:
                piece["speaker"] = runs[0][0]["speaker"]
            result.append(piece)
            continue
        for index, run in enumerate(runs):
            piece = {
                **segment,
                "start": segment["start"] if index == 0 else run[0]["start"],
                "end": segment["end"] if index == len(runs) - 1 else run[-1]["end"],
                "text": _join_words(run),
                "words": run,
                "speaker": run[0]["speaker"],
            }
            result.append(piece)
    if result and all("id" in segment for segment in result):
        first = result[0]["id"]
        if isinstance(first, int):
            result = [{**segment, "id": first + index} for index, segment in enumerate(result)]
    return result


def _runs(words: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = []
    for word in words:
        if runs and runs[-1][-1].get("speaker") == word.get("speaker"):
            runs[-1].append(dict(word))
        else:
            runs.append([dict(word)])
    return runs


def _join_words(words: Sequence[Mapping[str, Any]]) -> str:
    # The transcriber strips each word; faster-whisper's own words keep their leading space.
    # Either way a single space between words reads right for space-separated scripts.
    joined = " ".join(str(word["word"]).strip() for word in words)
    return joined.strip()


def relabel_speakers(segments: Iterable[Mapping[str, Any]], *, keep: Collection[str] = ()) -> list[Segment]:
    """Copies with the speakers renamed "A", "B", … in the order they first speak (segment by segment,
    word by word), so the same diarizer label is always the same letter across the file. Labels in
    `keep` (enrolled voices' names) stay as they are, and no letter is given that one of them already is."""
    copies = [dict(segment) for segment in segments]
    names: dict[str, str] = {label: label for label in keep}
    letters = iter(label for label in map(speaker_label, itertools.count()) if label not in names)

    def rename(label: Any) -> Any:
        if label is None:
            return None
        if label not in names:
            names[label] = next(letters)
        return names[label]

    for segment in copies:
        words = [dict(word) for word in segment.get("words") or []]
        for word in words:
            word["speaker"] = rename(word.get("speaker"))
        if "words" in segment:
            segment["words"] = words
        segment["speaker"] = rename(segment.get("speaker"))
    return copies


def attribute_speakers(
    segments: Iterable[Mapping[str, Any]], turns: Sequence[Turn], *, keep: Collection[str] = ()
) -> list[Segment]:
    """The join of a transcript and a diarization: each word gets a speaker, segments are split where
    the speaker changes, and speakers are labelled "A", "B", … in order of first appearance (but for
    the labels in `keep`: enrolled voices' names)."""
    turns = sorted(turns, key=lambda turn: (float(turn["start"]), float(turn["end"])))
    return relabel_speakers(split_at_speaker_changes(assign_words(segments, turns)), keep=keep)


def talk_time(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Seconds each speaker talks, from segments (or turns): `[{speaker, talk_seconds[, channel]}]` in
    order of first appearance. Overlapping items of one speaker are counted once."""
    spans: dict[str, list[tuple[float, float]]] = {}
    channels: dict[str, Any] = {}
    for item in items:
        speaker = item.get("speaker")
        if speaker is None or item.get("start") is None or item.get("end") is None:
            continue
        spans.setdefault(speaker, []).append((float(item["start"]), float(item["end"])))
        if item.get("channel") is not None:
            channels.setdefault(speaker, item["channel"])
    result = []
    for speaker, found in spans.items():
        entry: dict[str, Any] = {"speaker": speaker, "talk_seconds": round(_union_length(found), 3)}
        if speaker in channels:
            entry["channel"] = channels[speaker]
        result.append(entry)
    return result


def language_time(segments: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Seconds spoken in each language, from timed segments that carry their `language` (a code-switching
    transcript): `[{language, talk_seconds}]`, the most spoken first; empty when no segment says."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for segment in segments:
        language = segment.get("language")
        if language is None or segment.get("start") is None or segment.get("end") is None:
            continue
        spans.setdefault(str(language), []).append((float(segment["start"]), float(segment["end"])))
    talk = [{"language": language, "talk_seconds": round(_union_length(found), 3)} for language, found in spans.items()]
    return sorted(talk, key=lambda entry: -float(entry["talk_seconds"]))


def _union_length(spans: list[tuple[float, float]]) -> float:
    total = 0.0
    reach = float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def merge_channels(
    transcripts: Mapping[int, Iterable[Mapping[str, Any]]],
    *,
    labels: Mapping[int, str] | None = None,
) -> list[Segment]:
    """One transcript from the transcripts of each channel (channel index → segments), in time order.

    Each channel is one speaker: its segments and words get `speaker` (the channel's label from
    `labels`, else "A" for channel 0, "B" for channel 1, …) and segments get `channel`. Segments that
    start together keep channel order, so the merge is deterministic.
    """
    merged: list[tuple[float, int, int, Segment]] = []
    for channel, segments in transcripts.items():
        label = labels[channel] if labels and channel in labels else speaker_label(channel)
        for order, segment in enumerate(segments):
            words = [{**word, "speaker": label} for word in segment.get("words") or []]
            copy = {**segment, "speaker": label, "channel": channel}
            if "words" in segment:
                copy["words"] = words
            start = float(segment["start"]) if segment.get("start") is not None else 0.0
            merged.append((start, channel, order, copy))
    merged.sort(key=lambda item: item[:3])
    result = [segment for *_, segment in merged]
    if result and all(isinstance(segment.get("id"), int) for segment in result):
        result = [{**segment, "id": index} for index, segment in enumerate(result)]
    return result
