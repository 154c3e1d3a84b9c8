"""Transcription through the local stack against faster-whisper called directly, on the same files.

    .venv/bin/python bench/transcribe.py [--repeat 3] [--workload-repeat 4] [--database-url URL]
                                         [--skip-workload] [--skip-lid] [--model-cache DIR]
                                         [--engine-only | --skip-engine] [--poll-seconds 1.0]

What it prints (targets: single-job ratio ≤ 1.05, workload W ≤ 0.85 of raw):

1. Raw: faster-whisper in a process of its own (only faster-whisper imported), the bundled model,
   int8, beam 5, VAD, word timestamps, 2 CPU threads, warmed up with one file; each file's median
   time over `--repeat` runs, then workload W (the six English files × 4, one after another).
2. Single jobs: the local stack (`python -m shared.hosting up --only api router lid whisper`, one
   transcription worker with the same settings), warmed up, one `transcribe_only` job at a time; the
   end-to-end time is from POST /jobs to the client seeing `completed` (upload and polling included),
   its ratio to the raw time per file and in total (target ≤ 1.05), and the real-time factors.
3. Workload W through a stack with WHISPER_WORKERS=2 × WHISPER_CPU_THREADS=1 (and, for comparison,
   through the single-worker stack): 24 jobs submitted at once, first submit to last completion,
   against the raw sequential time (target ≤ 0.85).
4. Peak resident memory (VmHWM) of every worker process and of the raw process.
0. Engine against raw, no stack (`--engine-only` stops there): each file through
   `shared.engines.speech.transcriber.Transcriber` in this process (the stack's decoder and settings: batched,
   WHISPER_BATCH_SIZE=8, and sequential, 0) alternating with the raw process, median of `--repeat`,
   so the engine's share of a single job's ratio is seen apart from queueing and upload.
5. Language identification accuracy by clip length — the whole-file vote (`identify`: VAD, windows
   over all the speech) against Whisper's usual first-30-s detection (`identify_first_window`) — on
   clips of 0.5, 1, 2 and 5 s cut from the middle of the fixtures, bare and after 35 s of near-silence.

The machine's load average is printed at the start and the end: other processes share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.engines.audio import SAMPLE_RATE, decode, probe  # noqa: E402

AUDIO = REPO / "tests" / "fixtures" / "audio"
FILES = [*sorted((AUDIO / "en").glob("librivox-*.wav")), AUDIO / "en" / "meeting-chan3.wav"]
TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}
RAW_THREADS = 2

LID_LENGTHS = (0.5, 1.0, 2.0, 5.0)
LID_LEADING_SILENCE_S = 35.0
LID_CLIPS = {
    **{path: "eng" for path in FILES},
    AUDIO / "en" / "kokoro-counting.wav": "eng",
    AUDIO / "en" / "kokoro-hello_world.wav": "eng",
    **{path: "fra" for path in sorted((AUDIO / "fr").glob("*.wav"))},
    **{path: "cmn" for path in sorted((AUDIO / "zh").glob("*.wav"))},
}
# Stack configuration the child processes inherit; anything pointing elsewhere is dropped.
_DROPPED = (
    "DATABASE_URL",
    "SERVICE_BUS_CONNECTION_STRING",
    "SERVICE_BUS_NAMESPACE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "WHISPER_WORKERS",
    "WHISPER_CPU_THREADS",
)


# --- raw faster-whisper, in a process of its own -----------------------------------------------------------


def raw_main(argv: list[str]) -> int:
    """`bench/transcribe.py raw …`: faster-whisper alone, answering timing requests on stdin.

    Requests, one per line: `file PATH` (one transcription), `workload N` (every FILES entry N times,
    one after another), `memory` (peak RSS); each answer is one JSON line. Kept alive for the whole
    run so that raw and stack measurements can alternate and see the same background load.
    """
    parser = argparse.ArgumentParser(prog="bench/transcribe.py raw")
    parser.add_argument("--model-cache", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=RAW_THREADS)
    args = parser.parse_args(argv)

    from faster_whisper import WhisperModel

    from shared.core.config import WhisperSettings
    from shared.engines.speech.bundled_model import ensure_bundled_model

    config = WhisperSettings(cpu_threads=args.threads)
    model = WhisperModel(
        str(ensure_bundled_model(args.model_cache)),
        device=config.device,
        compute_type=config.compute_type,
        cpu_threads=config.cpu_threads,
    )

    def transcribe(path: Path) -> float:
        began = time.perf_counter()
        segments, _ = model.transcribe(
            str(path),
            language="en",
            beam_size=config.beam_size,
            vad_filter=config.vad_filter,
            word_timestamps=config.word_timestamps,
        )
        for _ in segments:  # the generator does the work
            pass
        return time.perf_counter() - began

    transcribe(FILES[0])  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        answer: dict[str, float]
        if command == "file":
            answer = {"seconds": transcribe(Path(argument))}
        elif command == "workload":
            began = time.perf_counter()
            for _ in range(int(argument)):
                for path in FILES:
                    transcribe(path)
            answer = {"seconds": time.perf_counter() - began}
        elif command == "memory":
            answer = {"peak_rss_mib": peak_rss_mib(os.getpid())}
        else:
            break
        print(json.dumps(answer), flush=True)
    return 0


class RawProcess:
    """The raw faster-whisper process (see `raw_main`), driven from here."""

    def __init__(self, model_cache: Path) -> None:
        command = [sys.executable, __file__, "raw", "--model-cache", str(model_cache)]
        self.process = subprocess.Popen(
            [*command, "--threads", str(RAW_THREADS)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # loaded and warmed up

    def transcribe(self, path: Path) -> float:
        return self._ask(f"file {path}")["seconds"]

    def workload(self, repeat: int) -> float:
        return self._ask(f"workload {repeat}")["seconds"]

    def peak_rss_mib(self) -> float:
        return self._ask("memory")["peak_rss_mib"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)

    def _ask(self, request: str) -> dict[str, float]:
        assert self.process.stdin is not None
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, float]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the raw faster-whisper process exited with {self.process.wait()}")
        answer: dict[str, float] = json.loads(line)
        return answer


# --- the local stack ----------------------------------------------------------------------------------------


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    client: httpx.Client
    log_path: Path
    poll_seconds: float = 1.0
    """A client's usual pace (`--poll-seconds`): every poll is API work on the cores the worker being
    timed needs. Times come from the jobs' own completed_at, not from when a poll saw them."""
    submitted: list[str] = field(default_factory=list)

    def submit(self, path: Path) -> str:
        body = {"workflow_type": "transcribe_only", "audio_filename": path.name, "source_language": "eng"}
        created = self.client.post("/jobs", json=body)
        created.raise_for_status()
        job = created.json()
        headers = {"x-ms-blob-type": "BlockBlob"}
        upload = self.client.put(job["upload_url"], content=path.read_bytes(), headers=headers)
        upload.raise_for_status()
        self.client.post(f"/jobs/{job['job_id']}/start").raise_for_status()
        self.submitted.append(job["job_id"])
        job_id: str = job["job_id"]
        return job_id

    def wait(self, job_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.get(f"/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                if job["status"] != "completed":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error_message')}")
                return job
            time.sleep(self.poll_seconds)
        raise TimeoutError(f"job {job_id} not finished after {timeout} s")

    def wait_all(self, job_ids: list[str], *, timeout: float = 600.0) -> list[dict[str, Any]]:
        """One listing per poll rather than a request per job, to leave the cores to the workers."""
        pending = set(job_ids)
        finished: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
            listing = self.client.get("/jobs", params={"limit": 500}).json()
            for job in listing["items"]:
                if job["job_id"] in pending and job["status"] in TERMINAL:
                    if job["status"] != "completed":
                        error = job["error_message"]
                        raise RuntimeError(f"job {job['job_id']} ended {job['status']}: {error}")
                    pending.discard(job["job_id"])
                    finished.append(job)
        if pending:
            raise TimeoutError(f"{len(pending)} jobs not finished after {timeout} s")
        return finished

    def workers_started(self) -> int:
        """How many transcription workers have loaded their model and begun consuming."""
        count = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            # The host's step consumers log consumer_started; older hosts logged worker_started.
            started = '"worker_started"' in line or '"consumer_started"' in line
            if started and '"whisper-jobs"' in line:
                count += 1
        return count

    def children(self) -> dict[int, str]:
        """pid → component of every process the host supervises."""
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if parent == self.process.pid:
                    found[int(entry.name)] = argv[argv.index(b"run") + 1].decode()
        return found


@contextlib.contextmanager
def local_stack(
    home: Path,
    *,
    model_cache: Path,
    env: dict[str, str],
    database_url: str | None,
    workers: int,
    components: tuple[str, ...] | None = ("api", "router", "lid", "whisper"),
) -> Iterator[Stack]:
    """A local stack; yielded once `workers` transcription workers consume and /ready answers (with
    `workers=0`, as soon as /ready answers: what a user sees right after `make up`). `components=None`
    runs every component, as `make up` does."""
    port = _free_port()
    api_key = secrets.token_urlsafe(32)
    child_env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
    child_env.update(
        SPEECHFLOW_HOME=str(home),
        API_PORT=str(port),
        SPEECHFLOW_PUBLIC_URL=f"http://127.0.0.1:{port}",
        WHISPER_MODEL_CACHE_DIR=str(model_cache),
        PYTHONPATH=str(REPO),
        # The bootstrap key of an API that requires one; the limiter off, as it is not what is measured.
        SPEECHFLOW_API_KEY=api_key,
        RATE_LIMIT_PER_MINUTE="0",
        # Worker probe servers would all want port 8080 of a machine shared with other runs.
        HEALTH_PORT="0",
        **env,
    )
    if database_url:
        child_env["DATABASE_URL"] = database_url
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "host.log"
    with log_path.open("ab") as log:
        only = ["--only", *components] if components is not None else []
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.hosting", "up", *only],
            cwd=REPO,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": api_key}, timeout=60)
    stack = Stack(process, client, log_path)
    try:
        deadline = time.monotonic() + 120
        while stack.workers_started() < workers:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start; see {log_path}")
            time.sleep(0.2)
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start; see {log_path}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/ready").status_code == 200:
                    break
            time.sleep(0.2)
        yield stack
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
        return port


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(stack: Stack) -> dict[str, float]:
    return {
        f"{name}[{pid}]": peak_rss_mib(pid)
        for pid, name in sorted(stack.children().items(), key=lambda item: item[1])
        if name in ("lid", "whisper")
    }


@dataclass
class SingleJob:
    raw_seconds: float
    e2e_seconds: float
    step_seconds: float
    model_seconds: float


def single_jobs(stack: Stack, raw: RawProcess, *, repeat: int) -> dict[Path, SingleJob]:
    """Each file `repeat` times, raw and through the stack in turn; the medians."""
    stack.wait(stack.submit(FILES[0]))  # warm-up: first model call, first blob writes
    results: dict[Path, SingleJob] = {}
    for path in FILES:
        runs = []
        for _ in range(repeat):
            raw_seconds = raw.transcribe(path)
            time.sleep(0.3)  # an idle stack: every poller back at rest
            began = time.time()
            job = stack.wait(stack.submit(path))
            step = next(step for step in job["steps"] if step["step_type"] == "TRANSCRIBE")["details"]
            e2e = _completed(job) - began
            runs.append(SingleJob(raw_seconds, e2e, step["processing_seconds"], step["model_seconds"]))
        results[path] = SingleJob(
            raw_seconds=statistics.median(run.raw_seconds for run in runs),
            e2e_seconds=statistics.median(run.e2e_seconds for run in runs),
            step_seconds=statistics.median(run.step_seconds for run in runs),
            model_seconds=statistics.median(run.model_seconds for run in runs),
        )
    return results


def workload(stack: Stack, *, repeat: int) -> float:
    """Submit every file `repeat` times at once; seconds from the first submit to the last completion."""
    began = time.time()
    job_ids = [stack.submit(path) for _ in range(repeat) for path in FILES]
    jobs = stack.wait_all(job_ids)
    return max(_completed(job) for job in jobs) - began


def _completed(job: dict[str, Any]) -> float:
    """When the job completed, on this machine's clock (the stack runs here)."""
    return datetime.fromisoformat(job["completed_at"]).timestamp()


def warm_replicas(stack: Stack, replicas: int) -> None:
    job_ids = [stack.submit(FILES[0]) for _ in range(replicas)]
    stack.wait_all(job_ids)


# --- language identification by clip length ---------------------------------------------------------------


def lid_accuracy(model_cache: Path, clips_dir: Path) -> list[tuple[float, str, int, int, int]]:
    """(length, variant, clips, correct whole-file vote, correct first-30-s) per length and variant."""
    from shared.core.config import LidSettings, Settings, WhisperSettings
    from shared.engines.speech.language_id import WhisperLanguageIdentifier, whisper_settings_for_lid
    from shared.engines.speech.transcriber import LazyWhisperModel

    settings = Settings(
        whisper=WhisperSettings(cpu_threads=RAW_THREADS, model_cache_dir=model_cache), lid=LidSettings()
    )
    identifier = WhisperLanguageIdentifier(
        LazyWhisperModel(whisper_settings_for_lid(settings), model_cache),
        windows=settings.lid.windows,
        window_seconds=settings.lid.window_seconds,
        low_confidence=settings.lid.low_confidence,
    )
    identifier.load()
    rng = np.random.default_rng(7)
    rows = []
    for length in LID_LENGTHS:
        for variant in ("bare", f"after {LID_LEADING_SILENCE_S:.0f} s silence"):
            total = vote_right = first_right = 0
            for source, language in LID_CLIPS.items():
                samples = decode(source)
                wanted = round(length * SAMPLE_RATE)
                if len(samples) < wanted:
                    continue
                start = (len(samples) - wanted) // 2
                clip = samples[start : start + wanted]
                if variant != "bare":
                    # Room noise at about -60 dBFS rather than digital zeros.
                    hush = rng.normal(0.0, 0.001, round(LID_LEADING_SILENCE_S * SAMPLE_RATE))
                    clip = np.concatenate([hush.astype(np.float32), clip])
                path = clips_dir / f"{source.stem}-{length}-{variant.split()[0]}.wav"
                write_wav(path, clip)
                total += 1
                vote_right += identifier.identify(path)["language"] == language
                first_right += identifier.identify_first_window(path)["language"] == language
            rows.append((length, variant, total, vote_right, first_right))
    return rows


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


# --- the report ---------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["raw"]:
        return raw_main(argv[1:])
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per file for the per-file medians")
    parser.add_argument("--workload-repeat", type=int, default=4, help="times each file is in workload W")
    parser.add_argument("--database-url", help="run the stacks on this PostgreSQL server instead of SQLite")
    parser.add_argument("--model-cache", type=Path, help="where the bundled model is joined (default: temp)")
    parser.add_argument("--skip-workload", action="store_true")
    parser.add_argument("--skip-lid", action="store_true")
    parser.add_argument("--engine-only", action="store_true", help="only the engine-against-raw comparison")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="how often the client asks for status")
    parser.add_argument("--skip-engine", action="store_true", help="no engine-against-raw comparison")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="speechflow-bench-") as scratch:
        root = Path(scratch)
        model_cache = args.model_cache or root / "models"
        from shared.engines.speech.bundled_model import ensure_bundled_model

        ensure_bundled_model(model_cache)
        print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
        durations = {path: probe(path).duration_seconds for path in FILES}
        audio_total = sum(durations.values())
        print(f"files: {len(FILES)}, {audio_total:.1f} s of audio; W = each file × {args.workload_repeat}")
        print(f"database: {'PostgreSQL' if args.database_url else 'SQLite'}\n")

        raw = RawProcess(model_cache)
        if not args.skip_engine:
            engine_vs_raw(raw, model_cache, repeat=args.repeat)
        if args.engine_only:
            raw.close()
            print(f"\nload average at end: {load_average()}")
            return 0
        raw_workloads: list[float] = []
        single_env = {"WHISPER_WORKERS": "1", "WHISPER_CPU_THREADS": str(RAW_THREADS)}
        database = _fresh_database(args.database_url)
        with local_stack(
            root / "home-1", model_cache=model_cache, env=single_env, database_url=database, workers=1
        ) as stack:
            stack.poll_seconds = args.poll_seconds
            jobs = single_jobs(stack, raw, repeat=args.repeat)
            workload_single = None
            if not args.skip_workload:
                raw_workloads.append(raw.workload(args.workload_repeat))
                workload_single = workload(stack, repeat=args.workload_repeat)
            memory_single = peak_memory(stack)
        _print_single_jobs(jobs, durations)

        workload_replicas, memory_replicas = None, {}
        if not args.skip_workload:
            replica_env = {"WHISPER_WORKERS": "2", "WHISPER_CPU_THREADS": "1"}
            database = _fresh_database(args.database_url)
            with local_stack(
                root / "home-2", model_cache=model_cache, env=replica_env, database_url=database, workers=2
            ) as stack:
                stack.poll_seconds = args.poll_seconds
                warm_replicas(stack, 2)
                workload_replicas = workload(stack, repeat=args.workload_repeat)
                memory_replicas = peak_memory(stack)
            raw_workloads.append(raw.workload(args.workload_repeat))
            audio = audio_total * args.workload_repeat
            _print_workload(raw_workloads, workload_single, workload_replicas, audio)

        raw_peak = raw.peak_rss_mib()
        raw.close()
        stacks = {f"1 worker × {RAW_THREADS} threads": memory_single, "2 workers × 1 thread": memory_replicas}
        _print_memory(raw_peak, stacks)

        if not args.skip_lid:
            clips_dir = root / "clips"
            clips_dir.mkdir()
            print("\nlanguage identification by clip length (Whisper base, bundled model)")
            print(f"  {'clip':>6}  {'variant':<22} {'n':>3}  {'whole-file vote':>15}  {'first 30 s':>10}")
            for length, variant, total, vote, first in lid_accuracy(model_cache, clips_dir):
                if total:
                    shares = f"{vote / total:>14.0%}  {first / total:>10.0%}"
                    print(f"  {length:>5.1f}s  {variant:<22} {total:>3}  {shares}")
        print(f"\nload average at end: {load_average()}")
    return 0


def engine_vs_raw(raw: RawProcess, model_cache: Path, *, repeat: int) -> None:
    """Each file through the engine (batched and sequential) and through raw faster-whisper, in turn."""
    from shared.core.config import WhisperSettings
    from shared.engines.speech.transcriber import Transcriber

    batched = Transcriber(WhisperSettings(cpu_threads=RAW_THREADS), model_cache)
    sequential = Transcriber(WhisperSettings(cpu_threads=RAW_THREADS, batch_size=0), model_cache)
    for engine in (batched, sequential):
        engine.transcribe(FILES[0], language="eng")

    def timed(engine: Transcriber, path: Path) -> float:
        began = time.perf_counter()
        engine.transcribe(path, language="eng")
        return time.perf_counter() - began

    print(f"engine against raw faster-whisper, no stack (median of {repeat}; load {load_average()})")
    print(f"  {'file':<22} {'raw s':>7} {'batched 8':>10} {'ratio':>6} {'sequential':>11} {'ratio':>6}")
    totals = [0.0, 0.0, 0.0]
    for path in FILES:
        runs: list[list[float]] = [[], [], []]
        for _ in range(repeat):
            runs[0].append(raw.transcribe(path))
            runs[1].append(timed(batched, path))
            runs[2].append(timed(sequential, path))
        raw_s, batched_s, sequential_s = (statistics.median(values) for values in runs)
        totals = [totals[0] + raw_s, totals[1] + batched_s, totals[2] + sequential_s]
        print(
            f"  {path.name:<22} {raw_s:>7.2f} {batched_s:>10.2f} {batched_s / raw_s:>6.2f}"
            f" {sequential_s:>11.2f} {sequential_s / raw_s:>6.2f}"
        )
    print(
        f"  {'total':<22} {totals[0]:>7.2f} {totals[1]:>10.2f} {totals[1] / totals[0]:>6.2f}"
        f" {totals[2]:>11.2f} {totals[2] / totals[0]:>6.2f}\n"
    )


def _fresh_database(url: str | None) -> str | None:
    """Each stack gets an empty PostgreSQL database of its own (dropped at exit)."""
    if not url:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from shared.core.config import normalise_database_url

    admin_url = normalise_database_url(url)
    name = f"sf_bench_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()

    import atexit

    def drop() -> None:
        dropper = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with dropper.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        dropper.dispose()

    atexit.register(drop)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _print_single_jobs(jobs: dict[Path, SingleJob], durations: dict[Path, float]) -> None:
    print(f"single jobs on a warm, idle stack (1 worker × {RAW_THREADS} threads) vs raw faster-whisper")
    columns = [("audio", 6), ("raw", 7), ("e2e", 7), ("ratio", 6), ("RTF raw", 8), ("RTF e2e", 8)]
    columns += [("step", 7), ("model", 7)]
    print(f"  {'file':<20} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for path, job in jobs.items():
        print(
            f"  {path.stem:<20} {durations[path]:>5.1f}s {job.raw_seconds:>6.2f}s {job.e2e_seconds:>6.2f}s "
            f"{job.e2e_seconds / job.raw_seconds:>6.2f} {job.raw_seconds / durations[path]:>8.3f} "
            f"{job.e2e_seconds / durations[path]:>8.3f} {job.step_seconds:>6.2f}s {job.model_seconds:>6.2f}s"
        )
    raw_total = sum(job.raw_seconds for job in jobs.values())
    e2e_total = sum(job.e2e_seconds for job in jobs.values())
    audio = sum(durations.values())
    print(
        f"  {'total':<20} {audio:>5.1f}s {raw_total:>6.2f}s {e2e_total:>6.2f}s {e2e_total / raw_total:>6.2f} "
        f"{raw_total / audio:>8.3f} {e2e_total / audio:>8.3f}   (target ratio ≤ 1.05)"
    )
    print("  raw and e2e alternate, medians; e2e: POST /jobs → upload → start → the job's completed_at;")
    print("  step: the worker's time for the step (claim to result written); model: decoding and Whisper")


def _print_memory(raw_peak: float, stacks: dict[str, dict[str, float]]) -> None:
    print("\npeak resident memory (VmHWM)")
    print(f"  raw faster-whisper process, {RAW_THREADS} threads: {raw_peak:6.0f} MiB")
    for label, processes in stacks.items():
        for name, mib in processes.items():
            print(f"  stack, {label}: {name:<16} {mib:6.0f} MiB  ({mib / raw_peak:.2f}× raw)")


def _print_workload(
    raw_runs: list[float],
    single: float | None,
    replicas: float | None,
    audio: float,
) -> None:
    baseline = statistics.mean(raw_runs)
    runs = ", ".join(f"{seconds:.1f}" for seconds in raw_runs)
    print(f"\nworkload W: {round(audio)} s of audio, wall time and ratio to raw")
    print(f"  raw faster-whisper, sequential, {RAW_THREADS} threads: {baseline:6.1f} s  1.00  (runs {runs})")
    if single is not None:
        ratio = single / baseline
        print(f"  stack, 1 worker × {RAW_THREADS} threads, all at once: {single:6.1f} s  {ratio:.2f}")
    if replicas is not None:
        print(
            f"  stack, 2 workers × 1 thread, all at once: {replicas:6.1f} s  "
            f"{replicas / baseline:.2f}   (target ≤ 0.85)"
        )
    print(f"  RTF raw {baseline / audio:.3f}")


if __name__ == "__main__":
    sys.exit(main())
