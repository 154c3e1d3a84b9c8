"""Long audio: raw faster-whisper (sequential and batched) against the engine on chunked input.

    .venv/bin/python bench/long_audio.py [--hour] [--minutes 10] [--batch-sizes 8] [--chunk-seconds 150]
                                         [--modes raw-seq raw-batched chunked-1x2 chunked-2x1] [--repeat 1]

The recording is built from the LibriVox fixtures of tests/fixtures/audio/en (their readings, one
after another with pauses of 0.4–1.2 s, repeated until it is long enough), so its reference text is
known. `--hour` builds the 60-minute file instead of the 10-minute one.

Every run is a process of its own (its peak resident memory is its own), with the bundled Whisper
base model, int8, beam 5, VAD, word timestamps, warmed up on one clip before the clock starts:

- `raw-seq`: `WhisperModel.transcribe`, 2 threads (the baseline, ratio 1.00);
- `raw-batched`: `BatchedInferencePipeline`, 2 threads, once per `--batch-sizes` value;
- `chunked-1x2`: the engine (shared/engines/speech) as the stack runs a long file: `plan_chunks` cuts it at
  pauses, each chunk's window is decoded alone and transcribed by one `Transcriber` with 2 threads,
  `stitch` joins the results;
- `chunked-2x1`: the same with two worker processes of 1 thread each taking chunks as they free up
  (the fan-out of chunk steps over two transcription workers);
- `stack-1x2`, `stack-2x1`: the real local stack (`python -m shared.hosting up`, SQLite) with one
  transcription worker of 2 threads, or two of 1 thread, and TRANSCRIBE_CHUNK_SECONDS from
  `--chunk-seconds`: one `transcribe_only` job, from the upload to `completed`, so the time includes the
  fan-out into chunk steps, the queue hops and the join;
- `stack-default`: the same with the layout `make up` chooses for this machine (every component, as
  `make up` runs them), the job sent once the transcription workers consume (the warm stack);
- `stack-cold`: the same stack, the job sent as soon as GET /ready answers 200 after start, while
  the workers still load and warm up (what a user trying it first sees).

Printed: wall time, ratio to raw sequential, WER, peak RSS (per worker process for chunked-2x1), and
the load average at the start and the end (other processes may share the cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.engines.audio import SAMPLE_RATE, decode, decode_window  # noqa: E402
from tests.support.wer import wer  # noqa: E402

CLIPS = sorted((REPO / "tests" / "fixtures" / "audio" / "en").glob("librivox-*.wav"))
WARM_UP = CLIPS[0]
BEAM = 5
MODES = (
    "raw-seq",
    "raw-batched",
    "chunked-1x2",
    "chunked-2x1",
    "stack-1x2",
    "stack-2x1",
    "stack-default",
    "stack-cold",
)


def build_recording(folder: Path, minutes: float) -> tuple[Path, str]:
    """A WAV of at least `minutes` of LibriVox readings and its reference text."""
    readings = [(decode(path), path.with_suffix(".txt").read_text().strip()) for path in CLIPS]
    rng = random.Random(15)
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    while total < minutes * 60 * SAMPLE_RATE:
        for samples, text in readings:
            pause = np.zeros(round(rng.uniform(0.4, 1.2) * SAMPLE_RATE), dtype=np.float32)
            pieces += [samples, pause]
            texts.append(text)
            total += len(samples) + len(pause)
    path = folder / f"librivox-{minutes:g}min.wav"
    audio = np.clip(np.concatenate(pieces), -1.0, 1.0)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((audio * 32767).astype("<i2").tobytes())
    return path, " ".join(texts)


# --- child processes: one run each --------------------------------------------------------------------


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_path() -> str:
    from shared.engines.speech.bundled_model import resolve_model

    return resolve_model("bundled", Path(os.environ.get("BENCH_MODEL_CACHE", tempfile.gettempdir())) / "models")


def raw_run(path: Path, batch_size: int) -> dict[str, Any]:
    """faster-whisper alone on the file, as its README shows it."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(model_path(), device="cpu", compute_type="int8", cpu_threads=2)
    options: dict[str, Any] = {"beam_size": BEAM, "vad_filter": True, "word_timestamps": True, "language": "en"}
    runner: Any = model
    if batch_size > 0:
        runner = BatchedInferencePipeline(model)
        options["batch_size"] = batch_size
    list(runner.transcribe(str(WARM_UP), **options)[0])
    started = time.perf_counter()
    segments, _ = runner.transcribe(str(path), **options)
    text = " ".join(segment.text.strip() for segment in segments)
    return {"seconds": time.perf_counter() - started, "text": text, "peak_rss_mib": [peak_rss_mib()]}


_engine: dict[str, Any] = {}
"""This worker process's Transcriber, under "transcriber"."""


def _engine_start(threads: int, batch_size: int) -> float:
    """Load a Transcriber in this (worker) process and warm it up; its peak memory so far."""
    from shared.core.config import WhisperSettings
    from shared.engines.speech.transcriber import Transcriber

    config = WhisperSettings(model="bundled", cpu_threads=threads, beam_size=BEAM, batch_size=batch_size)
    engine = Transcriber(config, Path(os.environ.get("BENCH_MODEL_CACHE", tempfile.gettempdir())) / "models")
    engine.transcribe(WARM_UP, language="eng")
    _engine["transcriber"] = engine
    return peak_rss_mib()


def _engine_chunk(path: str, start: float, end: float) -> tuple[dict[str, Any], float]:
    """One chunk step: decode the chunk's window only, transcribe it."""
    samples = decode_window(path, start, end - start)
    return _engine["transcriber"].transcribe(samples, language="eng"), peak_rss_mib()


def chunked_run(path: Path, *, processes: int, threads: int, chunk_seconds: float, batch_size: int) -> dict[str, Any]:
    from shared.engines.speech.audio_chunks import plan_chunks, stitch

    if processes == 1:
        _engine_start(threads, batch_size)
        started = time.perf_counter()
        chunks = plan_chunks(path, chunk_seconds)
        planned = time.perf_counter() - started
        results = [_engine_chunk(str(path), start, end) for start, end in chunks]
        peaks = [peak_rss_mib()]
    else:
        pool = concurrent.futures.ProcessPoolExecutor(processes)
        with pool:
            warm = [pool.submit(_engine_start, threads, batch_size) for _ in range(processes)]
            concurrent.futures.wait(warm)
            started = time.perf_counter()
            chunks = plan_chunks(path, chunk_seconds)
            planned = time.perf_counter() - started
            futures = [pool.submit(_engine_chunk, str(path), start, end) for start, end in chunks]
            results = [future.result() for future in futures]
            peaks = [max(peak for _, peak in results)]
        peaks.append(peak_rss_mib())
    transcript = stitch([result for result, _ in results], [start for start, _ in chunks])
    return {
        "seconds": time.perf_counter() - started,
        "text": transcript["text"],
        "peak_rss_mib": peaks,
        "chunks": len(chunks),
        "plan_seconds": round(planned, 2),
    }


def memory_run(path: Path, *, chunk_seconds: float, batch_size: int) -> dict[str, Any]:
    """Peak memory of a long file's chunk workers, each decoding its own window: the plan in this
    process, then the first, a middle and the last chunk in a worker process of their own."""
    from shared.engines.speech.audio_chunks import plan_chunks

    chunks = plan_chunks(path, chunk_seconds)
    parent = peak_rss_mib()
    picked = sorted({0, len(chunks) // 2, len(chunks) - 1})
    peaks = []
    for index in picked:
        with concurrent.futures.ProcessPoolExecutor(1) as pool:
            pool.submit(_engine_start, 1, batch_size).result()
            start, end = chunks[index]
            peaks.append(pool.submit(_engine_chunk, str(path), start, end).result()[1])
    return {"chunks": len(chunks), "planner_mib": parent, "worker_mib": peaks, "picked": picked}


def whole_decode_run(path: Path) -> dict[str, Any]:
    """What holding the whole file costs before any model work: faster-whisper's own decode."""
    from faster_whisper.audio import decode_audio

    baseline = peak_rss_mib()
    decode_audio(str(path))
    return {"baseline_mib": baseline, "peak_mib": peak_rss_mib()}


def child_main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    path = Path(request["path"])
    if request["mode"] == "memory":
        answer = memory_run(path, chunk_seconds=request["chunk_seconds"], batch_size=request["batch_size"])
    elif request["mode"] == "whole-decode":
        answer = whole_decode_run(path)
    elif request["mode"].startswith("raw"):
        answer = raw_run(path, request["batch_size"])
    else:
        answer = chunked_run(
            path,
            processes=request["processes"],
            threads=request["threads"],
            chunk_seconds=request["chunk_seconds"],
            batch_size=request["batch_size"],
        )
    print(json.dumps(answer), flush=True)
    return 0


# --- the parent -------------------------------------------------------------------------------------------


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(request)],
        check=True,
        capture_output=True,
        text=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def stack_run(
    path: Path, *, workers: int, threads: int, chunk_seconds: float, batch_size: int, cold: bool = False
) -> dict[str, Any]:
    """One job through the real local stack; its wall time from upload to completion, its text, and the
    transcription workers' peak memory. `workers=0`: the layout and the components of `make up`;
    `cold`: the job goes in as soon as /ready answers, before the workers have loaded."""
    sys.path.insert(0, str(REPO / "bench"))
    from transcribe import local_stack, peak_memory  # bench/transcribe.py: the same stack harness

    from shared.core.config import Settings
    from shared.hosting.supervisor import local_layout

    cache = Path(os.environ.get("BENCH_MODEL_CACHE", tempfile.gettempdir())) / "models"
    env = {"WHISPER_BATCH_SIZE": str(batch_size), "TRANSCRIBE_CHUNK_SECONDS": str(chunk_seconds)}
    components: tuple[str, ...] | None = ("api", "router", "lid", "whisper")
    if workers:
        env.update(WHISPER_WORKERS=str(workers), WHISPER_CPU_THREADS=str(threads))
    else:
        components = None
        workers = local_layout(Settings()).workers
    with (
        tempfile.TemporaryDirectory() as home,
        local_stack(
            Path(home),
            model_cache=cache,
            env=env,
            database_url=None,
            workers=0 if cold else workers,
            components=components,
        ) as stack,
    ):
        started = time.perf_counter()
        job_id = stack.submit(path)
        job = stack.wait(job_id, timeout=3600)
        seconds = time.perf_counter() - started
        text = stack.client.get(f"/jobs/{job_id}/results").json()["transcript"]["text"]
        parts = sum(1 for step in job["steps"] if "." in step["step_type"])
        peaks = [peak for name, peak in peak_memory(stack).items() if name.startswith("whisper")]
    return {"seconds": seconds, "text": text, "peak_rss_mib": peaks, "parts": parts, "timeline": timeline(job)}


def timeline(job: dict[str, Any]) -> str:
    """Each step's start and end in seconds after the job was created, in the order they started: where a
    stack run's time goes beside the engine's (queue hops, the chunk plan, the join)."""
    from datetime import datetime

    created = datetime.fromisoformat(job["created_at"])
    spans = []
    for step in job["steps"]:
        if step.get("started_at") and step.get("completed_at"):
            start = (datetime.fromisoformat(step["started_at"]) - created).total_seconds()
            end = (datetime.fromisoformat(step["completed_at"]) - created).total_seconds()
            spans.append((start, end, step["step_type"]))
    return ", ".join(f"{name} {start:.1f}–{end:.1f}" for start, end, name in sorted(spans))


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hour", action="store_true", help="the 60-minute recording instead of 10 minutes")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--chunk-seconds", type=float, nargs="+", default=[150.0])
    parser.add_argument("--engine-batch-size", type=int, default=8)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every configuration; the fastest counts")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only peak memory: chunk workers on the first, a middle and the last chunk, against a whole decode",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main([args.child])

    import ctranslate2

    minutes = 60.0 if args.hour else args.minutes
    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    cuda = ctranslate2.get_cuda_device_count()
    print(
        "no CUDA GPU here: CPU only (int8); the float16 GPU run was not made"
        if cuda == 0
        else f"{cuda} CUDA device(s) present; this benchmark runs on CPU only"
    )
    with tempfile.TemporaryDirectory() as folder:
        path, reference = build_recording(Path(folder), minutes)
        duration = len(decode_window(path, 0, minutes * 60 + 120)) / SAMPLE_RATE
        print(f"recording: {duration / 60:.1f} min of LibriVox readings, {len(reference.split())} reference words\n")
        base = {"path": str(path)}
        if args.memory_only:
            for chunk_seconds in args.chunk_seconds:
                request = {**base, "mode": "memory", "chunk_seconds": chunk_seconds}
                found = run_child({**request, "batch_size": args.engine_batch_size})
                print(
                    f"{chunk_seconds:g} s chunks ({found['chunks']} in all):"
                    f" planner peak {found['planner_mib']:.0f} MiB;"
                    f" 1-thread chunk worker peak on chunks {found['picked']}: "
                    + ", ".join(f"{peak:.0f}" for peak in found["worker_mib"])
                    + " MiB"
                )
            whole = run_child({**base, "mode": "whole-decode"})
            print(
                f"whole file decoded at once (faster-whisper decode_audio, as a whole-file worker does):"
                f" {whole['peak_mib']:.0f} MiB peak, from {whole['baseline_mib']:.0f} MiB before"
            )
            print(f"load average at end: {load_average()}")
            return 0
        plan: list[tuple[str, dict[str, Any]]] = []
        if "raw-seq" in args.modes:
            plan.append(("raw sequential, 2 threads", {**base, "mode": "raw", "batch_size": 0}))
        if "raw-batched" in args.modes:
            for size in args.batch_sizes:
                plan.append((f"raw batched {size}, 2 threads", {**base, "mode": "raw", "batch_size": size}))
        for chunk_seconds in args.chunk_seconds:
            for mode, processes, threads in (("chunked-1x2", 1, 2), ("chunked-2x1", 2, 1)):
                if mode in args.modes:
                    request = {
                        **base,
                        "mode": mode,
                        "processes": processes,
                        "threads": threads,
                        "chunk_seconds": chunk_seconds,
                        "batch_size": args.engine_batch_size,
                    }
                    label = f"engine {processes}×{threads} thr, {chunk_seconds:g} s chunks"
                    plan.append((label, request))
            for mode, workers, threads in (
                ("stack-1x2", 1, 2),
                ("stack-2x1", 2, 1),
                ("stack-default", 0, 0),
                ("stack-cold", 0, 0),
            ):
                if mode in args.modes:
                    request = {
                        **base,
                        "mode": mode,
                        "workers": workers,
                        "threads": threads,
                        "chunk_seconds": chunk_seconds,
                        "batch_size": args.engine_batch_size,
                    }
                    names = {"stack-default": "stack, make up's layout", "stack-cold": "stack, make up's, cold"}
                    name = names.get(mode, f"stack {workers}×{threads} thr")
                    plan.append((f"{name}, {chunk_seconds:g} s chunks", request))
        # Rounds run every configuration once, in turn, so that a burst of load from other processes
        # falls on all of them; each configuration's fastest round is reported.
        best: dict[str, dict[str, Any]] = {}
        for round_number in range(1, args.repeat + 1):
            for label, request in plan:
                if request["mode"].startswith("stack"):
                    answer = stack_run(
                        Path(request["path"]),
                        workers=request["workers"],
                        threads=request["threads"],
                        chunk_seconds=request["chunk_seconds"],
                        batch_size=request["batch_size"],
                        cold=request["mode"] == "stack-cold",
                    )
                else:
                    answer = run_child(request)
                print(f"round {round_number}: {label}: {answer['seconds']:.1f} s (load {load_average()})", flush=True)
                if answer.get("timeline"):
                    print(f"  steps (s after the job was created): {answer['timeline']}", flush=True)
                if label not in best or answer["seconds"] < best[label]["seconds"]:
                    best[label] = answer
        baseline = best[plan[0][0]]["seconds"] if "raw-seq" in args.modes else None
        heading = f"how (fastest of {args.repeat}; engine batch {args.engine_batch_size})"
        print(f"\n{heading:<52} {'wall s':>7} {'ratio':>6} {'WER %':>6} {'peak RSS MiB':>14}")
        for label, _ in plan:
            answer = best[label]
            ratio = f"{answer['seconds'] / baseline:.2f}" if baseline else "-"
            peaks = "/".join(f"{peak:.0f}" for peak in answer["peak_rss_mib"])
            print(
                f"{label:<52} {answer['seconds']:>7.1f} {ratio:>6} {100 * wer(reference, answer['text']):>6.2f}"
                f" {peaks:>14}"
            )
    print("peak RSS: the process; engine 2×1: busiest worker / planning parent; stack: each transcription worker")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
