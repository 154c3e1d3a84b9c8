"""Transcriber with the real bundled Whisper base model (CTranslate2 int8 on CPU), and its plumbing.

Model tests share one model per module and transcribe each clip once; the batching, out-of-memory
and device checks use stand-ins injected through the Transcriber's constructor.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from shared.core.config import WhisperSettings
from shared.core.errors import ConfigurationError, PermanentError
from shared.engines.audio import decode, probe
from shared.engines.speech.bundled_model import ensure_bundled_model, resolve_model
from shared.engines.speech.transcriber import (
    MAX_PROMPT_TOKENS,
    LazyWhisperModel,
    PromptTooLong,
    Transcriber,
    TranscriptionCancelled,
)
from tests.support.wer import close_enough

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
LIBRIVOX = sorted(path.stem for path in (AUDIO / "en").glob("librivox-*.wav"))
MAX_WER = 0.10


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def transcriber(model_cache: Path) -> Transcriber:
    config = WhisperSettings(model="bundled", device="cpu", compute_type="int8", cpu_threads=2, beam_size=5)
    engine = Transcriber(config, model_cache)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def librivox_results(transcriber: Transcriber) -> dict[str, dict[str, Any]]:
    """Each LibriVox clip transcribed once, by path, as the worker will call it."""
    return {name: transcriber.transcribe(AUDIO / "en" / f"{name}.wav", language="eng") for name in LIBRIVOX}


# --- with the model ---------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("name", LIBRIVOX)
def test_librivox_word_error_rate(librivox_results: dict[str, dict[str, Any]], name: str) -> None:
    result = librivox_results[name]
    reference = (AUDIO / "en" / f"{name}.txt").read_text()

    assert close_enough(reference, result["text"], MAX_WER), result["text"]
    assert result["language"] == "eng"


@pytest.mark.model
@pytest.mark.parametrize("name", LIBRIVOX)
def test_word_timestamps_increase_inside_the_audio(librivox_results: dict[str, dict[str, Any]], name: str) -> None:
    result = librivox_results[name]
    duration = probe(AUDIO / "en" / f"{name}.wav").duration_seconds
    words = [word for segment in result["segments"] for word in segment["words"]]

    assert len(words) >= len(result["text"].split()) - 1
    assert result["duration"] == pytest.approx(duration, abs=0.01)
    previous_end = 0.0
    for word in words:
        assert 0.0 <= word["start"] <= word["end"] <= duration + 0.01, word
        assert word["start"] >= previous_end - 0.01, word
        assert 0.0 <= word["probability"] <= 1.0
        previous_end = word["end"]
    for segment in result["segments"]:
        assert segment["words"][0]["start"] >= segment["start"] - 0.01
        assert segment["words"][-1]["end"] <= segment["end"] + 0.01


@pytest.mark.model
def test_result_describes_the_run(librivox_results: dict[str, dict[str, Any]]) -> None:
    result = librivox_results[LIBRIVOX[0]]

    assert result["model"] == "bundled"
    assert result["device"] == "cpu"
    assert result["compute_type"] == "int8"
    assert 0 < result["processing_seconds"] < 60
    assert 0.5 < result["language_probability"] <= 1.0
    assert result["text"] == " ".join(segment["text"] for segment in result["segments"])


@pytest.mark.model
def test_11khz_meeting_clip_with_detected_language(transcriber: Transcriber) -> None:
    progress: list[float] = []

    result = transcriber.transcribe(AUDIO / "en" / "meeting-chan3.wav", on_progress=progress.append)

    assert result["language"] == "eng"
    assert len(result["text"].split()) >= 10
    assert result["duration"] == pytest.approx(20.87, abs=0.05)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert all(0.0 <= value <= 1.0 for value in progress)


@pytest.mark.model
def test_samples_in_iso_language_and_cancellation(transcriber: Transcriber) -> None:
    samples = decode(AUDIO / "zh" / "kokoro-pangrama.wav")

    result = transcriber.transcribe(samples, language="cmn")

    assert result["language"] == "cmn"
    assert result["text"]

    with pytest.raises(TranscriptionCancelled):
        transcriber.transcribe(samples, language="zh", should_stop=lambda: True)


@pytest.mark.model
def test_unknown_language_is_a_permanent_error(transcriber: Transcriber) -> None:
    with pytest.raises(PermanentError, match="unsupported language"):
        transcriber.transcribe(np.zeros(16000, dtype=np.float32), language="xx")


# --- the bundled model --------------------------------------------------------------------------------


def test_bundled_model_is_joined_once_and_repaired_when_incomplete(tmp_path: Path) -> None:
    folder = ensure_bundled_model(tmp_path)
    model_bin = folder / "model.bin"
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    size = model_bin.stat().st_size
    assert size > 100_000_000
    stamp = model_bin.stat().st_mtime_ns

    assert ensure_bundled_model(tmp_path) == folder
    assert model_bin.stat().st_mtime_ns == stamp

    with model_bin.open("r+b") as handle:
        handle.truncate(size // 2)
    (folder / "config.json").unlink()
    ensure_bundled_model(tmp_path)
    assert model_bin.stat().st_size == size
    assert (folder / "config.json").is_file()


def test_concurrent_joins_leave_one_complete_model(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_bundled_model(tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    folder = results[0]
    assert not [path for path in folder.iterdir() if path.name.endswith(".partial")]
    assert ensure_bundled_model(tmp_path) == folder


def test_resolve_model(tmp_path: Path) -> None:
    assert resolve_model("bundled", tmp_path) == str(ensure_bundled_model(tmp_path))
    assert resolve_model(str(tmp_path), tmp_path / "unused") == str(tmp_path)
    assert resolve_model("large-v3", tmp_path) == "large-v3"


# --- batching, out of memory, devices (stand-ins, no model) ------------------------------------------


class _LoadedModel(LazyWhisperModel):
    """A holder whose `get()` hands back a placeholder instead of loading Whisper."""

    def get(self) -> Any:
        return "model"


class _Pipeline:
    """Fails like CTranslate2 on a small GPU while the batch is above `fits`."""

    def __init__(self, fits: int, error: str = "CUDA failed with error out of memory") -> None:
        self.fits = fits
        self.error = error
        self.batch_sizes: list[int] = []

    def transcribe(self, audio: Any, **options: Any) -> tuple[Any, Any]:
        batch_size = options["batch_size"]
        self.batch_sizes.append(batch_size)
        info = SimpleNamespace(language="en", language_probability=0.99, duration=4.0)

        def segments() -> Any:
            yield SimpleNamespace(start=0.0, end=2.0, text=" first", words=None)
            if batch_size > self.fits:
                raise RuntimeError(self.error)
            yield SimpleNamespace(start=2.0, end=4.0, text=" second", words=None)

        return segments(), info


def _batched(tmp_path: Path, pipeline: _Pipeline, batch_size: int = 8) -> Transcriber:
    config = WhisperSettings(device="cuda", compute_type="float16", batch_size=batch_size)
    return Transcriber(config, tmp_path, model=_LoadedModel(config, tmp_path), batched_pipeline=lambda model: pipeline)


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size(tmp_path: Path) -> None:
    pipeline = _Pipeline(fits=2)
    transcriber = _batched(tmp_path, pipeline)

    result = transcriber.transcribe(np.zeros(64000, dtype=np.float32), language="eng")

    assert pipeline.batch_sizes == [8, 4, 2]
    assert result["text"] == "first second"
    assert [segment["text"] for segment in result["segments"]] == ["first", "second"]
    assert result["batch_size"] == 2
    transcriber.transcribe(np.zeros(64000, dtype=np.float32), language="eng")
    assert pipeline.batch_sizes == [8, 4, 2, 2]


def test_out_of_memory_at_batch_size_one_fails_permanently(tmp_path: Path) -> None:
    pipeline = _Pipeline(fits=0)
    transcriber = _batched(tmp_path, pipeline, batch_size=6)

    with pytest.raises(PermanentError, match="out of memory even at batch size 1"):
        transcriber.transcribe(np.zeros(64000, dtype=np.float32))
    assert pipeline.batch_sizes == [6, 3, 1]


def test_other_runtime_errors_are_not_retried(tmp_path: Path) -> None:
    pipeline = _Pipeline(fits=0, error="CUDA failed with error an illegal memory access was encountered")
    transcriber = _batched(tmp_path, pipeline)

    with pytest.raises(RuntimeError, match="illegal memory access"):
        transcriber.transcribe(np.zeros(64000, dtype=np.float32))
    assert pipeline.batch_sizes == [8]


def test_cuda_without_a_gpu_is_a_configuration_error_before_loading(tmp_path: Path) -> None:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA device")
    transcriber = Transcriber(WhisperSettings(device="cuda", compute_type="float16"), tmp_path)

    with pytest.raises(ConfigurationError, match="no CUDA device"):
        transcriber.check_device()
    with pytest.raises(ConfigurationError, match="no CUDA device"):
        transcriber.load()
    assert not transcriber.model.loaded


def test_importing_the_engines_loads_no_model_library() -> None:
    code = (
        "import sys\n"
        "import shared.engines.speech.transcriber, shared.engines.speech.language_id\n"
        "import shared.engines.audio, shared.domain.subtitles\n"
        "heavy = {'faster_whisper', 'ctranslate2', 'torch', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "import faster_whisper\n"
        "assert 'torch' not in sys.modules, 'faster-whisper pulled in torch'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


# --- custom vocabulary and decoded input ------------------------------------------------------------------

VOCABULARY = AUDIO / "en" / "espeak-vocabulary.wav"
"""espeak-ng reading "Our new product is called Zylqor and it ships next week." (espeak-vocabulary.txt)."""


@pytest.mark.model
@pytest.mark.parametrize("batch_size", [8, 0], ids=["batched", "sequential"])
@pytest.mark.parametrize(
    "vocabulary",
    [{"hotwords": ["Zylqor"]}, {"prompt": "Release notes for Zylqor."}],
    ids=["hotwords", "prompt"],
)
def test_vocabulary_changes_the_spelling(
    model_cache: Path, transcriber: Transcriber, batch_size: int, vocabulary: dict[str, Any]
) -> None:
    engine = Transcriber(transcriber.model.config.model_copy(update={"batch_size": batch_size}), model_cache,
                         model=transcriber.model)  # fmt: skip

    plain = engine.transcribe(VOCABULARY, language="eng")["text"]
    steered = engine.transcribe(VOCABULARY, language="eng", **vocabulary)["text"]

    assert "Zylqor" not in plain
    assert "Zylqor" in steered


@pytest.mark.model
def test_a_prompt_past_the_limit_is_refused_before_any_work(transcriber: Transcriber) -> None:
    tokenizer = transcriber.model.get().hf_tokenizer
    fits = " ".join(["vocabulary"] * 300)
    while len(tokenizer.encode(" " + fits, add_special_tokens=False).ids) > MAX_PROMPT_TOKENS:
        fits = fits.rsplit(" ", 1)[0]

    assert transcriber.check_vocabulary(prompt=fits, hotwords=None) <= MAX_PROMPT_TOKENS
    with pytest.raises(PromptTooLong, match="at most 223") as raised:
        transcriber.transcribe(VOCABULARY, prompt=fits, hotwords=["Zylqor", "Kubernetes"])
    assert isinstance(raised.value, PermanentError)
    assert raised.value.tokens > MAX_PROMPT_TOKENS


@pytest.mark.model
def test_decoded_samples_transcribe_as_the_file_does(
    transcriber: Transcriber, librivox_results: dict[str, dict[str, Any]]
) -> None:
    name = LIBRIVOX[0]

    from_samples = transcriber.transcribe(decode(AUDIO / "en" / f"{name}.wav"), language="eng")

    assert from_samples["text"] == librivox_results[name]["text"]
    assert from_samples["segments"] == librivox_results[name]["segments"]
