"""Queue-hop latency and router throughput, on SQLite and PostgreSQL.

    .venv/bin/python bench/queue_hop.py [--backend sqlite|postgres|both] [--jobs 40] [--events 2000]

Hop latency: the router and one worker process per queue run as separate processes, as in `make up`;
workers do no work. For each full_pipeline job (LID → TRANSCRIBE → TRANSLATE → SUMMARIZE) the three
hops are timed from a step's completed_at to the next step's started_at, i.e. completion committed →
job event delivered → router decision committed → step message delivered → step claimed. Jobs run
one at a time, so this is the latency of an idle stack.

Router throughput: N job_started events are queued while no router runs; then one router process
drains them; events/s = N / time until every job has its first step dispatched.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.core.config import Settings  # noqa: E402
from shared.core.db import migrate  # noqa: E402
from shared.domain.models import Job, ProcessingStep  # noqa: E402
from shared.jobs.store import create_job, start_job  # noqa: E402
from shared.runtime import Runtime  # noqa: E402
from shared.steps.runner import StepContext  # noqa: E402
from shared.worker.component import BaseWorker  # noqa: E402

QUEUES = {"lid": ("LID",), "whisper": ("TRANSCRIBE",), "ai": ("TRANSLATE", "SUMMARIZE")}


def noop_worker(kind: str, env: dict[str, str]) -> None:
    os.environ.update(env)

    class NoopWorker(BaseWorker):
        step_types: ClassVar[tuple[str, ...]] = QUEUES[kind]
        receive_wait_seconds: ClassVar[float] = 5.0

        def process(self, step: StepContext) -> dict[str, Any]:
            if step.step_type == "LID":
                step.job_updates["detected_language"] = "fra"
            return {"ok": True}

    NoopWorker(Settings()).run()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def queue_jobs(runtime: Runtime, count: int) -> list[uuid.UUID]:
    ids = []
    with runtime.sessions() as session, session.begin():
        for _ in range(count):
            job = create_job(
                session=session,
                audio_filename="bench.wav",
                workflow_type="full_pipeline",
                source_language=None,
                target_language="en",
                callback_url=None,
                source_job_id=None,
                audio_blob_path=None,
            )
            start_job(session=session, bus=runtime.bus, queue=runtime.settings.job_events_queue, job_id=job.id)
            ids.append(job.id)
    return ids


def hop_latency(settings: Settings, env: dict[str, str], jobs: int) -> list[float]:
    runtime = Runtime(settings)
    context = multiprocessing.get_context("spawn")
    router = subprocess.Popen([sys.executable, "-m", "shared.hosting", "run", "router"], env=env, cwd=REPO)
    workers = [context.Process(target=noop_worker, args=(kind, env)) for kind in QUEUES]
    for worker in workers:
        worker.start()
    hops: list[float] = []
    try:
        time.sleep(3)  # processes up
        for _ in range(jobs + 2):
            (job_id,) = queue_jobs(runtime, 1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with runtime.sessions() as session:
                    if session.scalar(select(Job.status).where(Job.id == job_id)) == "completed":
                        break
                time.sleep(0.01)
            else:
                raise RuntimeError("job did not complete")
            with runtime.sessions() as session:
                steps = {
                    s.step_type: s
                    for s in session.scalars(select(ProcessingStep).where(ProcessingStep.job_id == job_id)).all()
                }
            order = ["LID", "TRANSCRIBE", "TRANSLATE", "SUMMARIZE"]
            job_hops = [
                (steps[b].started_at - steps[a].completed_at).total_seconds() * 1000  # type: ignore[operator]
                for a, b in itertools.pairwise(order)
            ]
            hops.extend(job_hops)
        return hops[6:]  # the first two jobs warm the processes up
    finally:
        router.terminate()
        router.wait()
        for worker in workers:
            worker.terminate()
            worker.join()
        runtime.close()


def router_throughput(settings: Settings, env: dict[str, str], events: int) -> float:
    runtime = Runtime(settings)
    queue_jobs(runtime, events)
    router = subprocess.Popen([sys.executable, "-m", "shared.hosting", "run", "router"], env=env, cwd=REPO)
    try:
        started = None
        while True:
            with runtime.sessions() as session:
                dispatched = session.scalar(select(func.count()).select_from(ProcessingStep)) or 0
            if started is None and dispatched > 0:
                started = time.perf_counter()
                first = dispatched
            if dispatched >= events:
                break
            time.sleep(0.005)
        assert started is not None
        return (events - first) / (time.perf_counter() - started)
    finally:
        router.terminate()
        router.wait()
        runtime.close()


def run_backend(name: str, url: str, home: Path, jobs: int, events: int) -> dict[str, float]:
    settings = Settings(database_url=url, speechflow_home=home)
    migrate(settings)
    env = {**os.environ, "DATABASE_URL": url, "SPEECHFLOW_HOME": str(home), "PYTHONPATH": str(REPO)}
    hops = hop_latency(settings, env, jobs)
    with create_engine(url).begin() as connection:
        connection.execute(text("DELETE FROM queue_messages"))
    throughput = router_throughput(settings, env, events)
    return {
        "hops": len(hops),
        "p50": statistics.median(hops),
        "p95": percentile(hops, 0.95),
        "max": max(hops),
        "events_per_s": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="speechflow-bench-") as folder:
        if args.backend in ("sqlite", "both"):
            home = Path(folder) / "sqlite"
            results["sqlite"] = run_backend("sqlite", f"sqlite:///{home / 'bench.db'}", home, args.jobs, args.events)
        if args.backend in ("postgres", "both"):
            database = f"sf_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{database}"'))
            try:
                url = str(admin.url.set(database=database).render_as_string(hide_password=False))
                results["postgres"] = run_backend("postgres", url, Path(folder) / "pg", args.jobs, args.events)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
                admin.dispose()

    print(
        f"\nqueue hop (step completed → next step started), {args.jobs} idle full_pipeline jobs;"
        f" router drain of {args.events} events"
    )
    print(f"{'backend':<10} {'hops':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'router events/s':>16}")
    for name, figures in results.items():
        print(
            f"{name:<10} {figures['hops']:>5.0f} {figures['p50']:>8.1f} {figures['p95']:>8.1f} {figures['max']:>8.1f}"
            f" {figures['events_per_s']:>16.0f}"
        )
    print("targets: hop p50 ≤ 20 ms on PostgreSQL; router ≥ 500 events/s")


if __name__ == "__main__":
    main()
