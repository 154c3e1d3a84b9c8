"""A GPU that cannot decode stops a Whisper process at start-up, with one line, instead of failing every job.

On an NVIDIA H200 with CUDA 13 only (docs/DEPLOY.md, "Checked on a GPU"), CTranslate2 4.8.5 counted the
GPU, listed float16 among its compute types and loaded the model on it; only its first encode failed, with
"Library libcublas.so.12 is not found or cannot be loaded", and our warm-up (check_device, then load)
passed, so the first job was the first to fail. Here the real bundled model runs on the CPU inside the
real faster-whisper `WhisperModel`; the one stand-in is for CTranslate2's model on such a host: it says it
is on cuda and raises what CTranslate2 raised there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import LidSettings, Settings, WhisperSettings
from shared.core.errors import ConfigurationError
from shared.engines.speech.bundled_model import ensure_bundled_model
from shared.engines.speech.transcriber import check_decodes, cuda_failure_message

pytestmark = pytest.mark.model

NO_CUBLAS_12 = "Library libcublas.so.12 is not found or cannot be loaded"
"""CTranslate2 4.8.5's words at its first encode on the H200, word for word."""


class _CudaWhisperWithoutCublas12:
    """CTranslate2's Whisper as it behaved on a CUDA 13 host: loaded on cuda, failing at its first computation."""

    device = "cuda"

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(NO_CUBLAS_12)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(NO_CUBLAS_12)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(NO_CUBLAS_12)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_bundled_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def cpu_model(bundled: Path) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(str(bundled), device="cpu", compute_type="int8", cpu_threads=1)


@pytest.fixture
def gpu_without_cublas_12(monkeypatch: pytest.MonkeyPatch, cpu_model: Any) -> Iterator[list[dict[str, Any]]]:
    """CTranslate2 sees one GPU, and every `WhisperModel` built is the real CPU model over the stand-in;
    yields the arguments each build was asked for."""
    import ctranslate2
    import faster_whisper

    asked: list[dict[str, Any]] = []

    def build(source: str, **options: Any) -> Any:
        asked.append({"source": source, **options})
        model = copy.copy(cpu_model)
        model.model = _CudaWhisperWithoutCublas12(cpu_model.model)
        return model

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(faster_whisper, "WhisperModel", build)
    yield asked


@pytest.fixture
def cuda_settings(make_settings: Callable[..., Settings], bundled: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        whisper = WhisperSettings(model=str(bundled), device="cuda", compute_type="float16", batch_size=8)
        return make_settings(whisper=whisper, **overrides)

    return build


WHISPER_LINE = (
    f"WHISPER_DEVICE=cuda put Whisper on the GPU, but a first decode there failed ({NO_CUBLAS_12}): CTranslate2 "
    "4.x needs CUDA 12's cuBLAS (libcublas.so.12) on the library path, as in the image gpu_worker/Dockerfile "
    "builds (CUDA 12 with cuDNN 9); or use WHISPER_DEVICE=cpu with WHISPER_COMPUTE_TYPE=int8"
)


def test_a_model_that_decodes_passes_the_start_up_check(cpu_model: Any) -> None:
    check_decodes(cpu_model)  # a real encode and one decoded token, on the CPU


def test_the_whisper_worker_stops_at_warm_up_with_one_line(
    gpu_without_cublas_12: list[dict[str, Any]], cuda_settings: Callable[..., Settings]
) -> None:
    from shared.steps import transcribe

    settings = cuda_settings()

    with pytest.raises(ConfigurationError) as raised:
        transcribe.warm_up(settings)

    assert str(raised.value) == WHISPER_LINE
    assert [(asked["device"], asked["compute_type"]) for asked in gpu_without_cublas_12] == [("cuda", "float16")]
    assert not transcribe.transcriber(settings).model.loaded  # nothing half-ready is kept for a job to use


def test_language_identification_on_its_own_gpu_model_names_lid_device(
    gpu_without_cublas_12: list[dict[str, Any]], make_settings: Callable[..., Settings], bundled: Path
) -> None:
    from shared.steps import lid

    # Transcription on the CPU, language identification (Whisper, the default backend) on the GPU.
    settings = make_settings(
        whisper=WhisperSettings(model=str(bundled), device="cpu", compute_type="int8"), lid=LidSettings(device="cuda")
    )

    with pytest.raises(ConfigurationError) as raised:
        lid.warm_up(settings)

    message = str(raised.value)
    assert message.startswith(
        f"LID_DEVICE=cuda put Whisper on the GPU, but a first decode there failed ({NO_CUBLAS_12})"
    )
    assert message.endswith("or use LID_DEVICE=cpu")


def test_the_live_server_stops_before_serving(
    gpu_without_cublas_12: list[dict[str, Any]], cuda_settings: Callable[..., Settings]
) -> None:
    from gpu_worker.realtime.server import build_decoder

    with pytest.raises(ConfigurationError) as raised:
        build_decoder(cuda_settings())

    assert str(raised.value) == WHISPER_LINE


def test_other_gpu_failures_are_one_line_too() -> None:
    error = RuntimeError("CUDA failed with error an illegal memory access was encountered\n  at encoder.cc:120")

    assert cuda_failure_message("WHISPER_DEVICE=auto", error) == (
        "WHISPER_DEVICE=auto put Whisper on the GPU, but a first decode there failed (CUDA failed with error an "
        "illegal memory access was encountered): fix the GPU's setup or use WHISPER_DEVICE=cpu with "
        "WHISPER_COMPUTE_TYPE=int8"
    )
