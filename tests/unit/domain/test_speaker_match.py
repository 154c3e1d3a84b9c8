"""Naming diarized speakers after enrolled voices (shared/domain/speaker_match.py), the enrollment
refusals, and the join keeping the names (shared/domain/speaker_turns.py, speaker_join.py)."""

from __future__ import annotations

import math
import uuid

import pytest

from shared.domain.options import JobOptions
from shared.domain.results import Diarization, Transcript
from shared.domain.speaker_join import with_speakers
from shared.domain.speaker_match import (
    MATCH_THRESHOLD,
    MIN_SPEECH_SECONDS,
    EnrolledVoice,
    cosine,
    enrollment_refusal,
    match_speakers,
)
from shared.domain.speaker_turns import relabel_speakers


def unit(angle_degrees: float) -> list[float]:
    """A 2-D vector at this angle: the cosine between two is the cosine of their angle difference."""
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


def at_similarity(similarity: float) -> list[float]:
    """A vector whose cosine to unit(0) is `similarity`."""
    return unit(math.degrees(math.acos(similarity)))


def test_cosine_of_known_vectors() -> None:
    assert cosine([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 2.0]) == pytest.approx(0.0)
    assert cosine([1.0, 1.0], [-1.0, -1.0]) == pytest.approx(-1.0)
    assert cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert cosine([1.0], [1.0, 0.0]) == 0.0


def test_a_cluster_close_to_a_voice_takes_its_name_and_a_far_one_does_not() -> None:
    alice = EnrolledVoice(name="Alice", embedding=unit(0), speaker_id="id-a")
    matches = match_speakers({"SPEAKER_1": at_similarity(0.9), "SPEAKER_2": at_similarity(0.4)}, [alice])

    assert [(m.cluster, m.voice and m.voice.name) for m in matches] == [("SPEAKER_1", "Alice"), ("SPEAKER_2", None)]
    assert matches[0].similarity == pytest.approx(0.9, abs=1e-3)
    assert matches[1].similarity == pytest.approx(0.4, abs=1e-3)


def test_the_threshold_is_inclusive_and_just_below_it_stays_a_stranger() -> None:
    alice = EnrolledVoice(name="Alice", embedding=unit(0))
    above = match_speakers({"c": at_similarity(MATCH_THRESHOLD + 1e-6)}, [alice])
    below = match_speakers({"c": at_similarity(MATCH_THRESHOLD - 1e-3)}, [alice])

    assert above[0].voice is alice
    assert below[0].voice is None


def test_two_clusters_never_share_a_name_the_closer_one_wins() -> None:
    alice = EnrolledVoice(name="Alice", embedding=unit(0))
    matches = match_speakers({"first": at_similarity(0.8), "second": at_similarity(0.95)}, [alice])

    assert [m.voice and m.voice.name for m in matches] == [None, "Alice"]


def test_the_surest_pair_is_taken_first_and_the_rest_fall_back_to_what_is_left() -> None:
    # c1 is close to both voices, c2 only to Alice: c1 and Alice are the surest pair, so c2 gets
    # nothing (Bob is too far from it) rather than c1 taking Bob.
    alice, bob = EnrolledVoice(name="Alice", embedding=unit(0)), EnrolledVoice(name="Bob", embedding=unit(40))
    matches = match_speakers({"c1": unit(18), "c2": unit(-30)}, [alice, bob])

    assert [(m.cluster, m.voice and m.voice.name) for m in matches] == [("c1", "Alice"), ("c2", None)]
    assert matches[1].similarity == pytest.approx(math.cos(math.radians(30)), abs=1e-3)


def test_without_voices_nothing_is_named() -> None:
    matches = match_speakers({"c": unit(0)}, [])

    assert matches[0].voice is None and matches[0].similarity == 0.0


@pytest.mark.parametrize(
    ("speech", "voices", "says"),
    [
        (0.0, [], "no speech"),
        (8.0, [0.7, 0.3], "more than one voice"),
        (MIN_SPEECH_SECONDS - 0.1, [1.0], "s of speech"),
    ],
)
def test_an_unusable_clip_is_refused_with_the_reason(speech: float, voices: list[float], says: str) -> None:
    refusal = enrollment_refusal(speech_seconds=speech, voices=voices)

    assert refusal is not None and says in refusal


def test_a_clip_of_one_voice_with_a_stray_blip_of_another_is_enrolled() -> None:
    assert enrollment_refusal(speech_seconds=6.0, voices=[1.0]) is None
    assert enrollment_refusal(speech_seconds=6.0, voices=[0.9, 0.1]) is None


def test_relabelling_keeps_names_and_skips_letters_a_name_already_is() -> None:
    segments = [
        {"start": 0.0, "end": 1.0, "text": "x", "speaker": "SPEAKER_2"},
        {"start": 1.0, "end": 2.0, "text": "y", "speaker": "A"},
        {"start": 2.0, "end": 3.0, "text": "z", "speaker": "SPEAKER_1"},
    ]

    relabelled = relabel_speakers(segments, keep={"A"})

    assert [s["speaker"] for s in relabelled] == ["B", "A", "C"]


def test_the_join_names_known_speakers_and_letters_the_others_with_talk_time() -> None:
    words = [
        {"start": 0.0, "end": 0.5, "word": "hello"},
        {"start": 0.6, "end": 1.0, "word": "there"},
        {"start": 2.0, "end": 2.5, "word": "hi"},
        {"start": 2.6, "end": 3.0, "word": "Alice"},
    ]
    transcript = Transcript(segments=[{"start": 0.0, "end": 3.0, "text": "hello there hi Alice", "words": words}])
    diarization = Diarization(
        turns=[
            {"start": 0.0, "end": 1.5, "speaker": "SPEAKER_1"},
            {"start": 1.5, "end": 3.0, "speaker": "Alice"},
        ],
        matches=[
            {"speaker": "SPEAKER_1", "similarity": 0.31},
            {"speaker": "Alice", "similarity": 0.88, "name": "Alice", "speaker_id": "id-a"},
        ],
    )

    joined = with_speakers(transcript, diarization)

    assert [(s.speaker, s.text) for s in joined.segments] == [("A", "hello there"), ("Alice", "hi Alice")]
    assert [w.speaker for s in joined.segments for w in s.words or []] == ["A", "A", "Alice", "Alice"]
    talk = {entry.speaker: entry for entry in joined.speakers or []}
    assert (talk["Alice"].known, talk["Alice"].speaker_id, talk["Alice"].similarity) == (True, "id-a", 0.88)
    assert (talk["A"].known, talk["A"].speaker_id) == (False, None)


def test_without_known_speakers_the_talk_time_says_nothing_of_them() -> None:
    words = [{"start": 0.0, "end": 0.5, "word": "hello"}]
    transcript = Transcript(segments=[{"start": 0.0, "end": 0.5, "text": "hello", "words": words}])
    joined = with_speakers(transcript, Diarization(turns=[{"start": 0.0, "end": 1.0, "speaker": "SPEAKER_1"}]))

    assert joined.speakers is not None and joined.speakers[0].known is None


def test_known_speakers_imply_speaker_labels_and_repeat_ids_count_once() -> None:
    first = uuid.uuid4()
    options = JobOptions(known_speakers=(first, first))

    assert options.speaker_labels is True
    assert options.known_speakers == (first,)
    assert options.stored()["known_speakers"] == [str(first)]
