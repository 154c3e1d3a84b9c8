"""Speakers from the windows of a recording: clustering the windows' speaker embeddings to a given count
(without letting an odd window or two take a speaker's place), and turns cut from the labelled windows
with each change of speaker at the quietest moment of the overlap. Used by the diarizer
(shared/engines/speech/diarization.py), whose docstring says why each choice was made."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt

from shared.engines.audio import SAMPLE_RATE, AudioArray

MAX_SPEAKERS = 20

_MIN_SPECTRAL_WINDOWS = 12
"""Twice the neighbours senko's pruning keeps per window (min_pnum = 6)."""

MIN_CLUSTER_WINDOWS = 3
"""With a speaker count, the fewest windows a cluster needs to count as a speaker. Average linkage
cut at the count can leave one or two odd windows (one straddling a change of speaker, a short
isolated word) as a cluster of their own and merge two voices to make up the number; on 30
held-out short-turn conversations of bench/diarize.py (3–5 voices, seeds 1–6 and 101–104) that
merge cost 21–34 % of the words in 6 of them. Two windows were not enough (one conversation had an
odd pair); three cleared every one, and four changed nothing more on the 21 it was tried on."""

_LOUDNESS_FRAME = 0.025
_LOUDNESS_HOP = 0.01
_LOUDNESS_SMOOTHING = 0.05
"""Seconds: where a change of speaker falls inside two windows' overlap (`quietest_point`)."""

CountMethod = Literal["spectral", "agglomerative"]


class Turn(TypedDict):
    start: float
    end: float
    speaker: str


def cluster_to_count(
    embeddings: npt.NDArray[np.float32],
    count: int,
    *,
    method: CountMethod = "agglomerative",
    min_windows: int = 1,
) -> npt.NDArray[np.int_]:
    """Labels 0 … count-1 for the window embeddings, exactly `count` clusters (fewer only when there
    are fewer windows than that). With average linkage, a cluster of fewer than `min_windows` windows
    does not count as a speaker: the tree is cut into more clusters until `count` of them have that
    many windows, and the windows of the others join the nearest of those (see `MIN_CLUSTER_WINDOWS`)."""
    windows = len(embeddings)
    count = min(count, windows)
    if count <= 1:
        return np.zeros(windows, dtype=int)
    if method == "agglomerative" or windows < _MIN_SPECTRAL_WINDOWS:
        # Spectral clustering prunes each row of the affinity to its closest windows; with only a
        # handful of windows there is nothing to prune and plain average linkage does as well.
        return _average_linkage(embeddings, count, min_windows=min_windows)
    with quiet_dependencies():
        from senko.cluster.cluster_cpu import SpectralCluster

    # senko's own settings (senko/cluster/conf/spectral.yaml in its wheel).
    spectral = SpectralCluster(min_num_spks=1, max_num_spks=MAX_SPEAKERS, pval=0.012, min_pnum=6)
    return np.asarray(spectral(embeddings.copy(), oracle_num=count), dtype=int)


def _average_linkage(embeddings: npt.NDArray[np.float32], count: int, *, min_windows: int) -> npt.NDArray[np.int_]:
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(np.asarray(embeddings, dtype=np.float64), method="average", metric="cosine")
    for clusters in range(count, len(embeddings) + 1):
        labels = np.asarray(fcluster(tree, t=clusters, criterion="maxclust"), dtype=int) - 1
        sizes = np.bincount(labels)
        if np.count_nonzero(sizes >= min_windows) >= count:
            break
    # The `count` largest clusters are the speakers (on a tie in size, the one of the lower label).
    speakers = np.argsort(-sizes, kind="stable")[:count]
    return nearest_speaker(embeddings, labels, speakers)


def nearest_speaker(
    embeddings: npt.NDArray[np.float32], labels: npt.NDArray[np.int_], speakers: npt.NDArray[np.int_]
) -> npt.NDArray[np.int_]:
    """Labels 0 … len(speakers)-1: a window of cluster `speakers[i]` gets i, a window of any other
    cluster the i of the speaker whose mean embedding it is most alike to (cosine)."""
    result = np.full(len(labels), -1, dtype=int)
    for index, cluster in enumerate(speakers.tolist()):
        result[labels == cluster] = index
    strays = result < 0
    if strays.any():
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        centroids = np.stack([unit[labels == cluster].mean(axis=0) for cluster in speakers.tolist()])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        result[strays] = np.argmax(unit[strays] @ centroids.T, axis=1)
    return result


@contextlib.contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Notices from senko's dependencies that nothing here can act on (the tests turn warnings into
    errors): silero-vad loads its model with torch.jit.load, which torch 2.13 deprecates; umap
    mentions its optional TensorFlow variant when imported."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Tensorflow not installed", category=ImportWarning)
        yield


def turns_from_windows(
    windows: Sequence[tuple[float, float]],
    speakers: Sequence[str],
    *,
    quietest: Callable[[float, float], float] | None = None,
) -> list[Turn]:
    """Turns from overlapping labelled windows (in time order): windows of one speaker that touch or
    overlap join into one turn; where the speaker changes inside an overlap, the turn boundary falls
    at `quietest(start, end)` of the overlap (a time within it), or in its middle without
    `quietest`. Windows separated by a pause stay separate turns."""
    turns: list[Turn] = []
    for (window_start, end), speaker in zip(windows, speakers, strict=True):
        start = max(0.0, window_start)
        if turns and start <= turns[-1]["end"]:
            last = turns[-1]
            if last["speaker"] == speaker:
                last["end"] = max(last["end"], end)
                continue
            overlap = (start, last["end"])
            start = quietest(*overlap) if quietest is not None else (overlap[0] + overlap[1]) / 2
            start = min(max(start, overlap[0]), overlap[1])
            last["end"] = start
        turns.append({"start": start, "end": end, "speaker": speaker})
    for turn in turns:
        turn["start"] = round(turn["start"], 3)
        turn["end"] = round(turn["end"], 3)
    return [turn for turn in turns if turn["end"] > turn["start"]]


def quietest_point(samples: AudioArray) -> Callable[[float, float], float]:
    """For 16 kHz samples: the time of the quietest 50 ms in a span (the middle of the span when it
    is shorter than that). The loudness is computed once, as 25 ms frames every 10 ms averaged over
    50 ms."""
    hop, frame = _LOUDNESS_HOP * SAMPLE_RATE, _LOUDNESS_FRAME * SAMPLE_RATE
    count = max(0, (len(samples) - int(frame)) // int(hop) + 1)
    if count == 0:
        return lambda start, end: (start + end) / 2
    squares = np.concatenate([[0.0], np.cumsum(np.asarray(samples, dtype=np.float64) ** 2)])
    starts = np.arange(count) * int(hop)
    energy = (squares[starts + int(frame)] - squares[starts]) / frame
    span = round(_LOUDNESS_SMOOTHING / _LOUDNESS_HOP)
    smoothed = np.convolve(energy, np.ones(span) / span, mode="same")

    def quietest(start: float, end: float) -> float:
        first, last = round(start / _LOUDNESS_HOP), min(round(end / _LOUDNESS_HOP), count)
        if last - first < span:
            return (start + end) / 2
        return (first + int(np.argmin(smoothed[first:last]))) * _LOUDNESS_HOP + _LOUDNESS_FRAME / 2

    return quietest
