"""The pure decisions of code-switching: which language each stretch of speech is in, and how the
stretches become runs transcribed one language at a time."""

from __future__ import annotations

import math

import pytest

from shared.domain.speaker_turns import language_time
from shared.engines.speech.code_switching import (
    PAD_SECONDS,
    SURE_SCORE,
    Stretch,
    assign_languages,
    language_runs,
    restrict,
    settle,
    unclear_candidates,
)


def stretch(start: float, end: float, **scores: float) -> Stretch:
    return Stretch(start, end, scores)


def test_restrict_keeps_only_the_languages_given_and_renormalises() -> None:
    narrowed = restrict({"lat": 0.5, "spa": 0.3, "eng": 0.1, "ita": 0.1}, ["spa", "eng"])
    assert narrowed == pytest.approx({"spa": 0.75, "eng": 0.25})
    assert restrict({"lat": 0.5}, None) == {"lat": 0.5}


def test_restrict_to_languages_none_scored_is_uniform() -> None:
    assert restrict({"lat": 1.0}, ["spa", "eng"]) == {"spa": 0.5, "eng": 0.5}


def test_every_long_stretch_keeps_its_own_language_when_turns_alternate() -> None:
    # A Spanish customer and an English agent: each turn seconds long, each clearly its language.
    stretches = [
        stretch(0.0, 3.0, spa=0.74, eng=0.26),
        stretch(3.5, 5.0, eng=0.9, spa=0.1),
        stretch(5.5, 9.0, spa=0.66, eng=0.34),
        stretch(9.5, 15.0, eng=1.0),
    ]
    assert assign_languages(stretches) == ["spa", "eng", "spa", "eng"]


def test_a_short_unclear_stretch_takes_the_language_around_it() -> None:
    stretches = [
        stretch(0.0, 4.0, eng=0.95, deu=0.05),
        stretch(4.3, 4.7, deu=0.5, eng=0.3),  # "OK" heard as German
        stretch(5.0, 9.0, eng=0.97, deu=0.03),
    ]
    assert assign_languages(stretches) == ["eng", "eng", "eng"]


def test_a_short_stretch_sure_of_another_language_keeps_it() -> None:
    stretches = [
        stretch(0.0, 4.0, eng=0.99, spa=0.01),
        stretch(4.3, 5.3, spa=0.999, eng=0.0001),
        stretch(5.6, 9.0, eng=0.99, spa=0.01),
    ]
    assert assign_languages(stretches) == ["eng", "spa", "eng"]


def test_the_switch_cost_decides_a_borderline_stretch() -> None:
    stretches = [
        stretch(0.0, 4.0, eng=0.99, fra=0.01),
        stretch(4.3, 5.3, fra=0.6, eng=0.2),  # evidence for French over English: log 3 = 1.1
        stretch(5.6, 9.0, eng=0.99, fra=0.01),
    ]
    assert assign_languages(stretches, switch_cost=0.5)[1] == "fra"
    assert assign_languages(stretches, switch_cost=1.0)[1] == "eng"


def test_no_stretches_no_languages() -> None:
    assert assign_languages([]) == []


def test_runs_join_stretches_of_one_language_stop_at_the_middle_of_a_pause_and_reach_the_ends() -> None:
    stretches = [
        stretch(1.0, 2.0, eng=1.0),
        stretch(2.4, 3.0, eng=1.0),
        stretch(3.2, 5.0, fra=1.0),
        stretch(6.0, 7.5, eng=1.0),
    ]
    runs = language_runs(stretches, ["eng", "eng", "fra", "eng"], duration=7.6)
    assert [(run.language, run.stretches) for run in runs] == [("eng", 2), ("fra", 1), ("eng", 1)]
    # The first run starts with the audio; between runs, padded where the pause allows (half the 0.2-s
    # pause between the first two; PAD_SECONDS of the one-second pause before the last).
    assert runs[0].start == 0.0
    assert runs[0].end == pytest.approx(3.1)
    assert runs[1].start == pytest.approx(3.1)
    assert runs[1].end == pytest.approx(5.0 + PAD_SECONDS)
    assert runs[2].start == pytest.approx(6.0 - PAD_SECONDS)
    assert runs[2].end == pytest.approx(7.6)  # the last run ends with the audio


def test_one_language_is_one_run_over_the_whole_audio() -> None:
    stretches = [stretch(0.8, 2.0, eng=1.0), stretch(3.0, 5.0, eng=0.9), stretch(6.0, 7.0, eng=1.0)]
    runs = language_runs(stretches, ["eng", "eng", "eng"], duration=9.5)
    assert [(run.start, run.end, run.language, run.stretches) for run in runs] == [(0.0, 9.5, "eng", 3)]


def test_an_unclear_stretch_is_decoded_in_its_likely_languages_only() -> None:
    assert unclear_candidates({"lat": 0.44, "spa": 0.35, "ita": 0.08, "eng": 0.04}) == ["lat", "spa", "ita"]
    assert unclear_candidates({"eng": SURE_SCORE, "deu": 0.2}) == []


def test_settling_lets_the_better_decode_win_over_a_slightly_higher_detection() -> None:
    # Whisper detects Latin for espeak Spanish, but decodes Spanish with far likelier tokens.
    settled = settle(
        {"lat": 0.44, "spa": 0.35, "ita": 0.08}, {"lat": (-0.78, 14), "spa": (-0.45, 16), "ita": (-0.7, 15)}
    )
    assert max(settled, key=lambda code: settled[code]) == "spa"
    assert sum(settled.values()) == pytest.approx(1.0)
    # The same length counts for every candidate: a shorter decode is not favoured for being short.
    expected = math.log(0.35) - 0.45 * 15 - (math.log(0.44) - 0.78 * 15)
    assert math.log(settled["spa"] / settled["lat"]) == pytest.approx(expected)


def test_settling_keeps_the_detection_when_the_decodes_fit_alike() -> None:
    settled = settle({"jpn": 0.6, "tha": 0.2}, {"jpn": (-0.9, 10), "tha": (-0.9, 10)})
    assert settled == pytest.approx({"jpn": 0.75, "tha": 0.25})


def test_language_time_counts_each_language_once_most_spoken_first() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "language": "spa"},
        {"start": 2.5, "end": 7.5, "language": "eng"},
        {"start": 8.0, "end": 9.0, "language": "spa"},
        {"start": 9.0, "end": 9.5, "text": "no language"},
    ]
    assert language_time(segments) == [
        {"language": "eng", "talk_seconds": 5.0},
        {"language": "spa", "talk_seconds": 3.0},
    ]
    assert language_time([{"start": 0.0, "end": 1.0}]) == []
