"""Language identification: window planning (pure) and the Whisper backend with the bundled model."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from shared.core.config import LidSettings, Settings, WhisperSettings
from shared.engines.audio import SAMPLE_RATE, decode
from shared.engines.speech.language_id import (
    MmsLanguageIdentifier,
    WhisperLanguageIdentifier,
    Window,
    combine,
    make_language_identifier,
    plan_windows,
    whisper_settings_for_lid,
)
from shared.engines.speech.transcriber import LazyWhisperModel

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"

CLIPS = [
    ("en/librivox-0870.wav", "eng"),
    ("en/librivox-0930.wav", "eng"),
    ("en/meeting-chan3.wav", "eng"),
    ("en/kokoro-hello_world.wav", "eng"),
    ("fr/kokoro-bonjour_monde.wav", "fra"),
    ("fr/kokoro-comptage.wav", "fra"),
    ("fr/kokoro-pangrama.wav", "fra"),
    ("zh/kokoro-jishu.wav", "cmn"),
    ("zh/kokoro-nihao_shijie.wav", "cmn"),
    ("zh/kokoro-pangrama.wav", "cmn"),
]


# --- planning and combining (no model) ----------------------------------------------------------------


def test_short_speech_becomes_equal_windows_covering_all_of_it() -> None:
    speech = [(1.0, 4.0), (10.0, 15.0)]  # 8 s of speech

    windows = plan_windows(speech, count=5, window_seconds=3.0)

    assert len(windows) == 3
    assert [window.speech_seconds for window in windows] == pytest.approx([8 / 3] * 3)
    flat = [[bound for span in window.spans for bound in span] for window in windows]
    assert flat[0] == pytest.approx([1.0, 1.0 + 8 / 3])
    assert flat[1] == pytest.approx([1.0 + 8 / 3, 4.0, 10.0, 10.0 + 16 / 3 - 3])
    assert flat[2] == pytest.approx([15.0 - 8 / 3, 15.0])


def test_long_speech_gets_evenly_spread_full_windows() -> None:
    speech = [(0.0, 100.0), (200.0, 300.0)]  # 200 s of speech

    windows = plan_windows(speech, count=4, window_seconds=10.0)

    assert [window.spans for window in windows] == [
        ((20.0, 30.0),),
        ((70.0, 80.0),),
        ((220.0, 230.0),),
        ((270.0, 280.0),),
    ]


def test_window_spanning_a_pause_maps_back_to_both_sides() -> None:
    windows = plan_windows([(0.0, 30.0), (90.0, 120.0)], count=1, window_seconds=20.0)

    assert windows == [Window(spans=((20.0, 30.0), (90.0, 100.0)))]


def test_no_speech_no_windows() -> None:
    assert plan_windows([], count=5, window_seconds=30.0) == []
    assert plan_windows([(0.0, 10.0)], count=0, window_seconds=30.0) == []


def test_combine_weights_windows_by_speech() -> None:
    result = combine(
        [({"eng": 0.9, "fra": 0.1}, 1.0), ({"fra": 0.8, "eng": 0.2}, 3.0)],
        low_confidence=0.6,
    )

    assert result["language"] == "fra"
    assert result["confidence"] == pytest.approx(0.1 * 0.25 + 0.8 * 0.75)
    assert [candidate["language"] for candidate in result["candidates"]] == ["fra", "eng"]
    assert result["low_confidence"] is False
    assert result["windows"] == 2
    assert combine([({"eng": 0.4, "deu": 0.35}, 1.0)], low_confidence=0.5)["low_confidence"] is True


def test_possible_languages_narrow_the_answer_and_share_the_whole_probability() -> None:
    scored = [({"eng": 0.5, "deu": 0.3, "nld": 0.15, "fra": 0.05}, 2.0)]

    narrowed = combine(scored, low_confidence=0.5, languages=["nld", "fra"])
    unheard = combine(scored, low_confidence=0.5, languages=["cmn", "jpn"])

    assert narrowed["language"] == "nld"
    assert narrowed["confidence"] == pytest.approx(0.75)
    assert [c["language"] for c in narrowed["candidates"]] == ["nld", "fra"]
    assert sum(c["probability"] for c in narrowed["candidates"]) == pytest.approx(1.0)
    # None of them scored at all: no preference between them, and the answer says it is unsure.
    assert unheard["language"] in {"cmn", "jpn"} and unheard["low_confidence"] is True


def test_factory_picks_the_backend_without_loading(tmp_path: Path) -> None:
    lid = LidSettings.model_validate({"LID_MODEL": "mms", "mms_model": "/models/mms", "windows": 3})
    settings = Settings(speechflow_home=tmp_path, lid=lid)
    mms = make_language_identifier(settings)
    assert isinstance(mms, MmsLanguageIdentifier)
    assert mms.model_name == "/models/mms"

    settings = Settings(
        speechflow_home=tmp_path,
        whisper=WhisperSettings(device="cuda", compute_type="float16", batch_size=8),
        lid=LidSettings(device="cpu"),
    )
    assert isinstance(make_language_identifier(settings), WhisperLanguageIdentifier)
    lid_whisper = whisper_settings_for_lid(settings)
    assert (lid_whisper.device, lid_whisper.compute_type, lid_whisper.batch_size) == ("cpu", "int8", 0)


# --- the Whisper backend ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identifier(tmp_path_factory: pytest.TempPathFactory) -> WhisperLanguageIdentifier:
    config = WhisperSettings(model="bundled", device="cpu", compute_type="int8", cpu_threads=2)
    engine = WhisperLanguageIdentifier(LazyWhisperModel(config, tmp_path_factory.mktemp("models")))
    engine.load()
    return engine


@pytest.mark.model
@pytest.mark.parametrize(("clip", "expected"), CLIPS, ids=[clip for clip, _ in CLIPS])
def test_identifies_the_language_of_each_clip(identifier: WhisperLanguageIdentifier, clip: str, expected: str) -> None:
    result = identifier.identify(AUDIO / clip)

    assert result["language"] == expected
    assert result["low_confidence"] is False
    assert result["confidence"] == result["candidates"][0]["probability"]
    assert len(result["candidates"]) == 5
    probabilities = [candidate["probability"] for candidate in result["candidates"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-3
    assert result["windows"] >= 1
    assert 0 < result["speech_seconds"] <= result["duration"] + 0.5
    assert (result["backend"], result["model"]) == ("whisper", "bundled")


def _write_flac(path: Path, samples: np.ndarray) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 4096], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.model
def test_whole_file_vote_hears_past_the_first_window(identifier: WhisperLanguageIdentifier, tmp_path: Path) -> None:
    """A short English opening, a long silence, then French: the first 30 s say English; the file is French."""
    silence = np.zeros(32 * SAMPLE_RATE, dtype=np.float32)
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    french = [decode(AUDIO / "fr" / name) for name in ("kokoro-comptage.wav", "kokoro-pangrama.wav")]
    samples = np.concatenate(
        [decode(AUDIO / "en" / "librivox-0880.wav"), silence, *[x for f in french for x in (f, gap)]]
    )
    path = _write_flac(tmp_path / "mixed.flac", np.concatenate([samples, *french]))
    engine = WhisperLanguageIdentifier(identifier._model, windows=5, window_seconds=3.0)

    whole = engine.identify(path)
    first = engine.identify_first_window(path)

    assert first["language"] == "eng"
    assert whole["language"] == "fra"
    assert whole["windows"] >= 4
    assert whole["speech_seconds"] < whole["duration"] - 30


@pytest.mark.model
def test_silence_is_flagged_low_confidence(identifier: WhisperLanguageIdentifier, tmp_path: Path) -> None:
    path = _write_flac(tmp_path / "silence.flac", np.zeros(5 * SAMPLE_RATE, dtype=np.float32))

    result = identifier.identify(path)

    assert result["low_confidence"] is True
    assert result["speech_seconds"] == 0
    assert result["windows"] == 1


@pytest.mark.model
def test_the_answer_is_one_of_the_possible_languages(identifier: WhisperLanguageIdentifier) -> None:
    french = AUDIO / "fr" / "kokoro-pangrama.wav"

    among = identifier.identify(french, languages=["eng", "fra", "deu"])
    elsewhere = identifier.identify(french, languages=["eng", "cmn"])

    assert among["language"] == "fra" and among["confidence"] >= identifier.identify(french)["confidence"]
    assert {c["language"] for c in among["candidates"]} == {"eng", "fra", "deu"}
    assert elsewhere["language"] in {"eng", "cmn"}


@pytest.mark.model
def test_decoded_samples_give_the_file_answer_without_decoding_again(
    identifier: WhisperLanguageIdentifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that already decoded the upload passes the samples: the same answer, and no decoding."""
    path = AUDIO / "fr" / "kokoro-pangrama.wav"
    from_file = identifier.identify(path)
    samples = decode(path)

    import shared.engines.audio
    import shared.engines.speech.language_id as lid

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded the file again")

    for name in ("decode_window", "iter_chunks", "probe"):
        monkeypatch.setattr(lid, name, refuse)
    monkeypatch.setattr(shared.engines.audio, "_open", refuse)
    from_samples = identifier.identify(samples, max_seconds=60)

    assert from_samples["language"] == from_file["language"] == "fra"
    assert from_samples["confidence"] == pytest.approx(from_file["confidence"], abs=0.02)
    assert from_samples["duration"] == pytest.approx(from_file["duration"], abs=0.01)
    assert from_samples["windows"] == from_file["windows"]
    with pytest.raises(lid.AudioTooLong):
        identifier.identify(samples, max_seconds=1.0)
