"""Named speakers (bench/diarize.py, last table): how often an enrolled voice's words carry its name,
and how often a stranger's words wrongly carry one, on conversations built as bench/diarize.py builds
them, from clips that are *not* the enrollment clips.

Each speaker keeps one clip out of every conversation as its enrollment clip (LibriVox 0870, Kokoro
en "counting", fr "comptage", zh "pangrama", and an eSpeak NG sentence of its own); the conversations
are laid out from the speaker's other clips. Voices are enrolled as the ENROLL step does
(`SenkoDiarizer.voiceprint`), each conversation is diarized as DIARIZE does (no count), the clusters
are matched with `shared.domain.speaker_match.match_speakers` and the turns joined with the reference
words (`attribute_speakers`, names kept). Strangers are the speakers of a conversation who are not
enrolled, among them the CMU "go forward" speaker, a real man reading English like the enrolled
LibriVox reader; one conversation has only strangers (the enrolled voices are absent).

Printed per conversation and threshold: named = share of enrolled speakers' words that carry their
own name; wrong = share of enrolled speakers' words that carry another's name; stranger named = share
of strangers' words that carry any enrolled name. And the similarities behind them: the lowest of a
cluster to its own speaker's enrollment, the highest of a cluster to a voice not its speaker's.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.domain.speaker_match import MATCH_THRESHOLD, EnrolledVoice, cosine, match_speakers
from shared.domain.speaker_turns import attribute_speakers
from shared.engines.audio import decode
from shared.engines.speech.diarization import SenkoDiarizer

HELD_OUT = {
    "libri": "librivox-0870.wav",
    "kokoro-en": "kokoro-counting.wav",
    "kokoro-fr": "kokoro-comptage.wav",
    "kokoro-zh": "kokoro-pangrama.wav",
}
ESPEAK_ENROLLMENT = "Please keep a print of my voice, so that the next meeting knows who is speaking."
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


@dataclass
class Scenario:
    name: str
    conversation: Any
    """A bench/diarize.py Conversation."""
    enrolled: tuple[str, ...]


def enrollment_clips(clips: dict[str, list[Any]], workdir: Path) -> dict[str, np.ndarray]:
    """Each speaker's held-out clip, decoded."""
    held: dict[str, np.ndarray] = {}
    for speaker, pool in clips.items():
        for clip in pool:
            if clip.path.name == HELD_OUT.get(speaker):
                held[speaker] = decode(clip.path)
    if "espeak" in clips:
        path = workdir / "espeak-enroll.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), ESPEAK_ENROLLMENT], check=True)
        held["espeak"] = decode(path)
    return held


def without_held_out(clips: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {speaker: [c for c in pool if c.path.name != HELD_OUT.get(speaker)] for speaker, pool in clips.items()}


def scenarios(
    pool: Callable[[str, tuple[float, float]], list[Any]],
    lay_out: Callable[..., Any],
    rng: random.Random,
    synthetic: str,
) -> list[Scenario]:
    four = lay_out(
        "4 spk, 1-3 s", {s: pool(s, (1.0, 3.0)) for s in ("libri", "kokoro-en", "kokoro-fr", synthetic)}, 60, rng
    )
    five = lay_out(
        "5 spk, 2-5 s",
        {s: pool(s, (2.0, 5.0)) for s in ("libri", "kokoro-en", "kokoro-fr", "kokoro-zh", synthetic)},
        60,
        rng,
    )
    call = lay_out("2 spk call, 1-3 s", {s: pool(s, (1.0, 3.0)) for s in ("libri", synthetic)}, 45, rng)
    # The CMU "go forward" speaker is a real man reading English, as the LibriVox reader is: the
    # hardest stranger here for the reader's name.
    human = lay_out("3 spk, 1-3 s", {s: pool(s, (1.0, 3.0)) for s in ("libri", "goforward", "kokoro-en")}, 45, rng)
    absent = lay_out(
        "3 spk, none enrolled",
        {s: pool(s, (1.0, 3.0)) for s in ("kokoro-en", "kokoro-fr", "goforward", synthetic)},
        45,
        rng,
    )
    return [
        Scenario("4 spk, 2 enrolled (a)", four, ("libri", "kokoro-fr")),
        Scenario("4 spk, 2 enrolled (b)", four, ("kokoro-en", synthetic)),
        Scenario("5 spk, 3 enrolled", five, ("kokoro-en", "kokoro-zh", synthetic)),
        Scenario("5 spk, all 5 enrolled", five, ("libri", "kokoro-en", "kokoro-fr", "kokoro-zh", synthetic)),
        Scenario("2 spk call, 1 enrolled", call, ("libri",)),
        Scenario("3 spk, reader enrolled", human, ("libri",)),
        Scenario("4 spk, only strangers", absent, ("libri", "kokoro-zh")),
    ]


def _named_words(
    words: Sequence[dict[str, Any]], turns: list[dict[str, Any]], names: set[str], segments_of: Callable[..., Any]
) -> list[tuple[str, str]]:
    """(true speaker, label it was given) per reference word."""
    joined = attribute_speakers(segments_of(list(words)), turns, keep=names)
    labels = [w["speaker"] for segment in joined for w in segment["words"]]
    return list(zip([w["speaker"] for w in words], labels, strict=True))


def run(
    diarizer: SenkoDiarizer,
    held: dict[str, np.ndarray],
    cases: list[Scenario],
    segments_of: Callable[..., Any],
    features: str,
) -> None:
    prints = {speaker: diarizer.voiceprint(audio).embedding for speaker, audio in held.items()}
    totals: dict[float, Counter[str]] = {threshold: Counter() for threshold in THRESHOLDS}
    same: list[float] = []
    other: list[float] = []
    print(
        f"\nnamed speakers ({features} features; enrolled voices' words named / named wrongly; strangers' words named)"
    )
    header = f"{'conversation':26} {'threshold':>9} {'named':>7} {'wrong':>7} {'stranger':>8}  "
    header += f"{'enrolled words':>14} {'stranger words':>14}"
    print(header)
    print("-" * len(header))
    for case in cases:
        conversation = case.conversation
        found = diarizer.diarize(conversation.audio)
        voices = [EnrolledVoice(name=speaker, embedding=prints[speaker]) for speaker in case.enrolled]
        truth = _cluster_truth(conversation.words, found.turns)
        for cluster, vector in found.centroids.items():
            owner = truth.get(cluster)
            for voice in voices:
                (same if voice.name == owner else other).append(cosine(vector, voice.embedding))
        for threshold in THRESHOLDS:
            matches = match_speakers(found.centroids, voices, threshold=threshold)
            rename = {m.cluster: m.voice.name for m in matches if m.voice is not None}
            turns = [{**t, "speaker": rename.get(t["speaker"], t["speaker"])} for t in found.turns]
            pairs = _named_words(conversation.words, turns, set(rename.values()), segments_of)
            count = Counter()
            for speaker, label in pairs:
                if speaker in case.enrolled:
                    count["enrolled"] += 1
                    count["named"] += label == speaker
                    count["wrong"] += label != speaker and label in case.enrolled
                else:
                    count["strangers"] += 1
                    count["stranger named"] += label in case.enrolled
            totals[threshold].update(count)
            if threshold == MATCH_THRESHOLD:
                print(_row(case.name, threshold, count), flush=True)
    print("-" * len(header))
    for threshold in THRESHOLDS:
        marker = "  <- MATCH_THRESHOLD" if threshold == MATCH_THRESHOLD else ""
        print(_row("all conversations", threshold, totals[threshold]) + marker)
    print(
        f"cluster-to-enrollment cosine: same speaker min {min(same):.3f} (n={len(same)}), "
        f"different speakers max {max(other):.3f} (n={len(other)})"
    )


def _row(name: str, threshold: float, count: Counter[str]) -> str:
    def share(part: str, whole: str) -> str:
        return f"{count[part] / count[whole]:7.1%}" if count[whole] else f"{'-':>7}"

    return (
        f"{name:26} {threshold:9.2f} {share('named', 'enrolled')} {share('wrong', 'enrolled')} "
        f"{share('stranger named', 'strangers'):>8}  {count['enrolled']:14d} {count['strangers']:14d}"
    )


def _cluster_truth(words: Sequence[dict[str, Any]], turns: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each cluster's true speaker: the one most of the words in its turns belong to."""
    votes: dict[str, Counter[str]] = {}
    for word in words:
        middle = (word["start"] + word["end"]) / 2
        for turn in turns:
            if turn["start"] <= middle <= turn["end"]:
                votes.setdefault(turn["speaker"], Counter())[word["speaker"]] += 1
                break
    return {cluster: count.most_common(1)[0][0] for cluster, count in votes.items()}
