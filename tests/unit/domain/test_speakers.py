"""The speaker join and the split-channel merge (shared/domain/speaker_turns.py), and the turn building of the
diarizer (shared/engines/speech/diarization.py), on hand-made transcripts and turns."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from shared.domain.speaker_turns import (
    assign_words,
    attribute_speakers,
    merge_channels,
    relabel_speakers,
    speaker_at,
    speaker_label,
    split_at_speaker_changes,
    talk_time,
)
from shared.engines.speech.diarization import BadSpeakerCount, check_speaker_count
from shared.engines.speech.speaker_windows import (
    MIN_CLUSTER_WINDOWS,
    CountMethod,
    cluster_to_count,
    nearest_speaker,
    quietest_point,
    turns_from_windows,
)


def word(start: float, end: float, text: str) -> dict[str, Any]:
    return {"start": start, "end": end, "word": text, "probability": 0.9}


def segment(*words: dict[str, Any], start: float | None = None, end: float | None = None) -> dict[str, Any]:
    return {
        "start": words[0]["start"] if start is None else start,
        "end": words[-1]["end"] if end is None else end,
        "text": " ".join(w["word"] for w in words),
        "words": list(words),
    }


TURNS = [
    {"start": 0.0, "end": 2.0, "speaker": "SPEAKER_7"},
    {"start": 2.0, "end": 4.0, "speaker": "SPEAKER_3"},
    {"start": 5.0, "end": 6.0, "speaker": "SPEAKER_7"},
]


# --- speaker of a span ---------------------------------------------------------------------------


def test_a_word_gets_the_speaker_it_overlaps_most() -> None:
    assert speaker_at(1.8, 2.5, TURNS) == "SPEAKER_3"
    assert speaker_at(1.2, 2.1, TURNS) == "SPEAKER_7"


def test_a_word_in_a_pause_gets_the_nearest_turn() -> None:
    assert speaker_at(4.1, 4.3, TURNS) == "SPEAKER_3"
    assert speaker_at(4.7, 4.9, TURNS) == "SPEAKER_7"
    assert speaker_at(9.0, 9.5, TURNS) == "SPEAKER_7"


def test_overlap_is_summed_over_a_speakers_turns() -> None:
    turns = [
        {"start": 0.0, "end": 1.0, "speaker": "x"},
        {"start": 1.0, "end": 1.6, "speaker": "y"},
        {"start": 1.6, "end": 3.0, "speaker": "x"},
    ]
    # y holds 0.6 s of the span, x 0.4 + 0.4 s.
    assert speaker_at(0.6, 2.0, turns) == "x"


def test_no_turns_no_speaker() -> None:
    assert speaker_at(0.0, 1.0, []) is None


# --- word assignment and splitting ----------------------------------------------------------------


def test_assign_words_gives_every_word_and_segment_a_speaker_without_changing_the_input() -> None:
    segments = [segment(word(0.1, 0.5, "Hello"), word(0.6, 1.0, "there"), word(2.2, 2.6, "hi"))]
    before = copy.deepcopy(segments)

    result = assign_words(segments, TURNS)

    assert [w["speaker"] for w in result[0]["words"]] == ["SPEAKER_7", "SPEAKER_7", "SPEAKER_3"]
    assert result[0]["speaker"] == "SPEAKER_7"
    assert segments == before


def test_a_segment_without_words_gets_the_speaker_of_its_span() -> None:
    result = assign_words([{"start": 2.1, "end": 3.9, "text": "mm"}], TURNS)

    assert result[0]["speaker"] == "SPEAKER_3"
    assert "words" not in result[0]


def test_without_turns_everyone_is_one_speaker() -> None:
    result = attribute_speakers([segment(word(0.0, 0.4, "a"), word(0.5, 0.9, "b"))], [])

    assert result[0]["speaker"] == "A"
    assert {w["speaker"] for w in result[0]["words"]} == {"A"}


def test_a_segment_is_split_where_the_speaker_changes() -> None:
    words = [word(0.2, 0.6, "How"), word(0.7, 1.1, "are"), word(1.2, 1.7, "you?"), word(2.3, 2.8, "Fine,")]
    words += [word(2.9, 3.4, "thanks."), word(5.2, 5.6, "Good.")]
    result = attribute_speakers([{**segment(*words, start=0.0, end=5.9), "id": 0}], TURNS)

    assert [(s["speaker"], s["text"]) for s in result] == [
        ("A", "How are you?"),
        ("B", "Fine, thanks."),
        ("A", "Good."),
    ]
    # The pieces cover what the segment covered; inner cuts fall on word boundaries.
    assert [(s["start"], s["end"]) for s in result] == [(0.0, 1.7), (2.3, 3.4), (5.2, 5.9)]
    assert [s["id"] for s in result] == [0, 1, 2]
    assert all(w["speaker"] == s["speaker"] for s in result for w in s["words"])


def test_a_segment_of_one_speaker_is_kept_whole() -> None:
    original = {**segment(word(0.1, 0.5, "one"), word(0.6, 0.9, "two")), "avg_logprob": -0.2}
    result = split_at_speaker_changes(assign_words([original], TURNS))

    assert len(result) == 1
    assert result[0]["text"] == "one two"
    assert result[0]["avg_logprob"] == -0.2
    assert result[0]["speaker"] == "SPEAKER_7"


# --- labels and talk time --------------------------------------------------------------------------


def test_speakers_are_relabelled_in_order_of_first_appearance_and_keep_their_label() -> None:
    segments = [
        {
            "start": 0.0,
            "end": 1.0,
            "text": "a",
            "speaker": "SPEAKER_9",
            "words": [{**word(0, 1, "a"), "speaker": "SPEAKER_9"}],
        },
        {"start": 1.0, "end": 2.0, "text": "b", "speaker": "SPEAKER_2", "words": []},
        {"start": 2.0, "end": 3.0, "text": "c", "speaker": "SPEAKER_9", "words": []},
        {"start": 3.0, "end": 4.0, "text": "d", "speaker": "SPEAKER_5", "words": []},
    ]

    assert [s["speaker"] for s in relabel_speakers(segments)] == ["A", "B", "A", "C"]
    assert relabel_speakers(segments)[0]["words"][0]["speaker"] == "A"


@pytest.mark.parametrize(("index", "label"), [(0, "A"), (1, "B"), (25, "Z"), (26, "AA"), (27, "AB"), (52, "BA")])
def test_speaker_labels_count_like_spreadsheet_columns(index: int, label: str) -> None:
    assert speaker_label(index) == label


def test_talk_time_per_speaker_counts_overlapping_stretches_once() -> None:
    items: list[dict[str, Any]] = [
        {"start": 0.0, "end": 2.0, "speaker": "A"},
        {"start": 1.5, "end": 3.0, "speaker": "A"},
        {"start": 3.0, "end": 4.25, "speaker": "B"},
        {"start": 5.0, "end": 6.0, "speaker": "A"},
        {"start": None, "end": None, "speaker": "B"},
    ]

    assert talk_time(items) == [{"speaker": "A", "talk_seconds": 4.0}, {"speaker": "B", "talk_seconds": 1.25}]


# --- split channels --------------------------------------------------------------------------------


def test_split_channels_merge_in_time_order_with_one_speaker_per_channel() -> None:
    left = [
        {**segment(word(0.0, 0.5, "Hello?")), "id": 0},
        {**segment(word(3.0, 3.6, "Yes,"), word(3.7, 4.0, "hi.")), "id": 1},
    ]
    right = [{**segment(word(1.0, 1.8, "Hi,"), word(1.9, 2.5, "it's")), "id": 0}]

    merged = merge_channels({0: left, 1: right})

    assert [(s["channel"], s["speaker"], s["text"]) for s in merged] == [
        (0, "A", "Hello?"),
        (1, "B", "Hi, it's"),
        (0, "A", "Yes, hi."),
    ]
    assert [s["id"] for s in merged] == [0, 1, 2]
    assert {w["speaker"] for w in merged[1]["words"]} == {"B"}
    assert talk_time(merged) == [
        {"speaker": "A", "talk_seconds": 1.5, "channel": 0},
        {"speaker": "B", "talk_seconds": 1.5, "channel": 1},
    ]


def test_split_channels_take_given_labels_and_keep_channel_order_on_ties() -> None:
    merged = merge_channels(
        {1: [segment(word(1.0, 2.0, "later"))], 0: [segment(word(1.0, 1.5, "same"))]},
        labels={0: "agent", 1: "caller"},
    )

    assert [(s["channel"], s["speaker"]) for s in merged] == [(0, "agent"), (1, "caller")]


# --- diarizer turns from labelled windows -------------------------------------------------------------


def test_turns_from_windows_cut_a_change_in_the_middle_of_the_overlap_and_keep_pauses() -> None:
    windows = [(0.0, 1.5), (0.6, 2.1), (1.2, 2.7), (1.8, 3.3), (5.0, 6.5)]
    speakers = ["s1", "s1", "s2", "s2", "s1"]

    assert turns_from_windows(windows, speakers) == [
        {"start": 0.0, "end": 1.65, "speaker": "s1"},
        {"start": 1.65, "end": 3.3, "speaker": "s2"},
        {"start": 5.0, "end": 6.5, "speaker": "s1"},
    ]


def test_a_change_inside_an_overlap_falls_where_it_is_quietest() -> None:
    windows = [(0.0, 1.5), (0.6, 2.1), (1.2, 2.7), (1.8, 3.3)]
    speakers = ["s1", "s1", "s2", "s2"]
    asked: list[tuple[float, float]] = []

    def quietest(start: float, end: float) -> float:
        asked.append((start, end))
        return 1.31

    turns = turns_from_windows(windows, speakers, quietest=quietest)

    assert asked == [(1.2, 2.1)]  # the overlap of the last s1 window and the first s2 window
    assert [(t["start"], t["end"], t["speaker"]) for t in turns] == [(0.0, 1.31, "s1"), (1.31, 3.3, "s2")]


def test_a_quiet_point_outside_the_overlap_is_held_to_it() -> None:
    windows = [(0.0, 1.5), (0.9, 2.4)]

    turns = turns_from_windows(windows, ["s1", "s2"], quietest=lambda start, end: 5.0)

    assert [(t["start"], t["end"]) for t in turns] == [(0.0, 1.5), (1.5, 2.4)]


def test_the_quietest_point_is_the_pause_between_two_voices() -> None:
    rng = np.random.default_rng(5)
    samples = (0.3 * rng.normal(size=3 * 16000)).astype(np.float32)
    samples[round(1.7 * 16000) : round(1.82 * 16000)] *= 0.01  # 120 ms of near silence

    quietest = quietest_point(samples)

    assert quietest(1.2, 2.1) == pytest.approx(1.76, abs=0.03)
    assert quietest(0.3, 1.2) != pytest.approx(1.76, abs=0.3)  # a span without the pause
    assert quietest(1.0, 1.03) == pytest.approx(1.015)  # shorter than the 50 ms it averages: the middle
    assert quietest_point(samples[:100])(0.0, 0.006) == pytest.approx(0.003)  # audio shorter than a frame


def test_turns_from_windows_clip_negative_starts() -> None:
    assert turns_from_windows([(-0.3, 1.2)], ["s"]) == [{"start": 0.0, "end": 1.2, "speaker": "s"}]


@pytest.mark.parametrize("count", [0, 21, -1])
def test_speaker_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(BadSpeakerCount, match="between 1 and 20"):
        check_speaker_count(count)


def test_speaker_count_in_range_or_absent_is_accepted() -> None:
    for count in (None, 1, 20):
        check_speaker_count(count)


# --- clustering window embeddings to a given count -------------------------------------------------


def _voices(counts: list[int], seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of windows from len(counts) voices: each a random direction plus a little noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(counts), 192))
    truth = np.repeat(np.arange(len(counts)), counts)
    return (centres[truth] + 0.25 * rng.normal(size=(len(truth), 192))).astype(np.float32), truth


@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_windows_are_clustered_to_exactly_the_count_asked(method: CountMethod) -> None:
    embeddings, truth = _voices([30, 20, 25])

    labels = cluster_to_count(embeddings, 3, method=method)

    assert len(set(labels.tolist())) == 3
    # Same partition as the truth, whatever the numbering.
    assert len({(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}) == 3


def test_a_count_above_the_windows_gives_one_cluster_per_window_at_most() -> None:
    embeddings, _ = _voices([2, 2])

    assert len(set(cluster_to_count(embeddings, 6).tolist())) == 4
    assert set(cluster_to_count(embeddings, 1).tolist()) == {0}


def _voices_and_strays(strays: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Windows of three voices that share a common part, as CAM++ embeddings do (20, 15 and 18
    windows), then `strays` odd windows (one straddling a change of speaker, a lone word): unlike
    every voice, but nearer the first than the others. Truth: the voice index, 0 for the strays."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=192)
    centres = common + rng.normal(size=(3, 192))
    truth = np.repeat(np.arange(3), [20, 15, 18])
    voices = centres[truth] + 0.5 * rng.normal(size=(len(truth), 192))
    odd = -common + 0.6 * centres[0] + 0.5 * rng.normal(size=(strays, 192))
    return np.vstack([voices, odd]).astype(np.float32), np.concatenate([truth, np.zeros(strays, dtype=int)])


def _same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("strays", [1, 2])
def test_odd_windows_do_not_take_a_speaker_of_the_count(strays: int) -> None:
    embeddings, truth = _voices_and_strays(strays)

    plain = cluster_to_count(embeddings, 3)
    labels = cluster_to_count(embeddings, 3, min_windows=MIN_CLUSTER_WINDOWS)

    # Cut at the count, the odd windows are a cluster of their own and two voices share one.
    assert not set(plain[-strays:].tolist()) & set(plain[:-strays].tolist())
    assert len(set(plain[:-strays].tolist())) == 2
    # Made to count only clusters of three windows or more, the voices are apart and the odd windows
    # join the voice they are nearest to.
    assert _same_partition(labels, truth)


def test_the_count_is_kept_when_a_voice_has_fewer_windows_than_a_cluster_needs() -> None:
    embeddings, _ = _voices_and_strays(0)
    few = np.vstack([embeddings[:50], embeddings[-2:]])  # the third voice down to 2 windows

    labels = cluster_to_count(few, 3, min_windows=MIN_CLUSTER_WINDOWS)

    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_windows_outside_the_speakers_clusters_join_the_most_alike_speaker() -> None:
    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.3], [-0.2, 1]], dtype=np.float32)
    labels = np.array([5, 5, 7, 7, 2, 9])

    assert nearest_speaker(embeddings, labels, np.array([7, 5])).tolist() == [1, 1, 0, 0, 1, 0]
