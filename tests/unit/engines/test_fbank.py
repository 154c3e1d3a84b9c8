"""The embedding windows' filterbank features where senko's own extractor cannot run
(shared/engines/speech/fbank.py): which CPUs need them, and their layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.engines.speech.fbank import (
    MEL_BINS,
    SAMPLE_RATE,
    cpu_flags,
    senko_extractor_runs_here,
    window_features,
    window_samples,
)

pytest.importorskip("kaldi_native_fbank")

EPYC_ROME = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\nprocessor\t: 1\n"
XEON = "processor\t: 0\nflags\t\t: avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni\n"
PARTIAL = "flags\t\t: avx2 avx512f\n"


@pytest.mark.parametrize(("cpuinfo", "runs"), [(EPYC_ROME, False), (XEON, True), (PARTIAL, False), ("", False)])
def test_senkos_extractor_needs_every_avx512_part_it_uses(tmp_path: Path, cpuinfo: str, runs: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)

    assert senko_extractor_runs_here(str(path)) is runs


def test_without_a_cpuinfo_senkos_own_build_is_trusted(tmp_path: Path) -> None:
    assert senko_extractor_runs_here(str(tmp_path / "absent")) is True
    assert cpu_flags(EPYC_ROME) == frozenset({"fpu", "sse2", "avx", "fma", "avx2", "bmi2"})


def test_each_window_is_framed_every_10_ms_and_mean_normalised() -> None:
    rng = np.random.default_rng(3)
    seconds = 4.0
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.01, t.size)).astype(np.float32)
    windows = [(0.0, 1.5), (0.75, 2.25), (3.99, 4.0), (2.5, 3.0)]

    flat, frames, offsets, dim = window_features(audio, windows)

    assert dim == MEL_BINS
    # snip_edges: 1 + (samples - 400) // 160 frames; the 10 ms window is padded to one frame.
    assert list(frames) == [1 + (24000 - 400) // 160, 1 + (24000 - 400) // 160, 1, 1 + (8000 - 400) // 160]
    assert list(offsets) == [0, *np.cumsum(frames[:-1] * MEL_BINS)]
    assert flat.dtype == np.float32 and flat.size == int(frames.sum()) * MEL_BINS
    first = flat[: frames[0] * MEL_BINS].reshape(frames[0], MEL_BINS)
    assert np.allclose(first.mean(axis=0), 0.0, atol=1e-4)
    assert np.isfinite(flat).all()


def test_a_window_past_the_end_is_cut_and_padded() -> None:
    audio = np.ones(1000, dtype=np.float32)

    assert len(window_samples(audio, 0.05, 0.2)) == 400  # 200 samples left, padded
    assert len(window_samples(audio, 0.0, 0.05)) == 800


def test_windows_are_cut_in_float32_as_senko_cuts_them() -> None:
    """senko passes the windows to its extractor as float32; (9.3, 10.1) is 12,800 samples there and
    12,799 in double precision."""
    audio = np.zeros(20 * SAMPLE_RATE, dtype=np.float32)
    audio[148800] = 1.0  # the window's first sample
    piece = window_samples(audio, 9.3, 10.1)

    assert int((10.1 - 9.3) * SAMPLE_RATE) == 12799
    assert len(piece) == 12800
    assert piece[0] == 1.0


def test_the_features_tell_two_voices_apart() -> None:
    """Different spectra give different features: a low and a high tone, per bin, differ."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    high = (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, t.size).astype(np.float32)
    audio = np.concatenate([low + noise, high + noise])

    import kaldi_native_fbank as knf

    from shared.engines.speech.fbank import _options

    def raw(piece: np.ndarray) -> np.ndarray:
        extractor = knf.OnlineFbank(_options())
        extractor.accept_waveform(SAMPLE_RATE, piece)
        extractor.input_finished()
        return np.stack([extractor.get_frame(n) for n in range(extractor.num_frames_ready)]).mean(axis=0)

    low_bins, high_bins = raw(audio[:SAMPLE_RATE]), raw(audio[SAMPLE_RATE:])
    assert int(np.argmax(low_bins - high_bins)) < MEL_BINS // 4
    assert int(np.argmax(high_bins - low_bins)) > MEL_BINS // 2
