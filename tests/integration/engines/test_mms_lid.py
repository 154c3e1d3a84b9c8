"""MMS-LID backend through its real loading and inference code, on a tiny random model.

facebook/mms-lid-126 cannot be downloaded here, so the test builds a randomly initialised
Wav2Vec2ForSequenceClassification of the same architecture (a few kilobytes of weights) and its
feature extractor, saves both with `save_pretrained`, and points the backend at that folder exactly
as production points it at a downloaded model. The predictions are random; the shapes, labels,
probabilities and the windowing are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.core.errors import ConfigurationError
from shared.engines.speech.language_id import MmsLanguageIdentifier, _window_audio, find_speech, plan_windows

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
LABELS = {0: "eng", 1: "fra", 2: "cmn", 3: "arb"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mms-lid")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )
    transformers.Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def identifier(tiny_model: Path) -> MmsLanguageIdentifier:
    engine = MmsLanguageIdentifier(str(tiny_model), "cpu", windows=3, window_seconds=2.0, low_confidence=0.5)
    engine.load()
    return engine


@pytest.mark.parametrize("clip", ["en/librivox-0870.wav", "zh/kokoro-pangrama.wav"])
def test_identify_reports_iso_codes_and_a_distribution(identifier: MmsLanguageIdentifier, clip: str) -> None:
    result = identifier.identify(AUDIO / clip)

    codes = {candidate["language"] for candidate in result["candidates"]}
    # Four labels, so all four are candidates; MMS's `arb` is reported as the macrolanguage `ara`.
    assert codes == {"eng", "fra", "cmn", "ara"}
    assert result["language"] == result["candidates"][0]["language"]
    assert sum(candidate["probability"] for candidate in result["candidates"]) == pytest.approx(1.0, abs=1e-3)
    assert result["low_confidence"] == (result["confidence"] < 0.5)
    assert result["windows"] == 3
    assert (result["backend"], result["model"]) == ("mms", identifier.model_name)


def test_scores_equal_the_model_run_directly(identifier: MmsLanguageIdentifier, tiny_model: Path) -> None:
    """One window: the backend's answer is the model's own softmax over that window's audio."""
    path = AUDIO / "en" / "librivox-0930.wav"
    engine = MmsLanguageIdentifier(str(tiny_model), "cpu", windows=1, window_seconds=30.0)
    (window,) = plan_windows(find_speech(path), count=1, window_seconds=30.0)
    samples = _window_audio(path, window)

    extractor = transformers.AutoFeatureExtractor.from_pretrained(tiny_model)
    model = transformers.AutoModelForAudioClassification.from_pretrained(tiny_model).eval()
    with torch.inference_mode():
        logits = model(**extractor(samples, sampling_rate=16000, return_tensors="pt")).logits[0]
    expected = dict(zip(["eng", "fra", "cmn", "ara"], torch.softmax(logits, dim=-1).tolist(), strict=True))

    result = engine.identify(path)

    assert result["windows"] == 1
    for candidate in result["candidates"]:
        assert candidate["probability"] == pytest.approx(expected[candidate["language"]], abs=1e-4)


def test_same_audio_same_answer(identifier: MmsLanguageIdentifier) -> None:
    path = AUDIO / "fr" / "kokoro-comptage.wav"

    assert identifier.identify(path) == identifier.identify(path)


def test_cuda_without_a_gpu_is_refused_at_start(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    engine = MmsLanguageIdentifier(str(tiny_model), "cuda")

    with pytest.raises(ConfigurationError, match="no CUDA device"):
        engine.check_device()
    assert np.isfinite(
        MmsLanguageIdentifier(str(tiny_model), "auto").identify(AUDIO / "fr" / "kokoro-comptage.wav")["confidence"]
    )
