"""SIGKILL the router and the workers mid-run, restart them: no job is lost, no step completes twice.

The router and three workers run as real processes on PostgreSQL and the SQL queue; the API runs in
this process. A lease of one second makes a killed worker's step reclaimable quickly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.domain.models import ProcessingStep
from shared.runtime import Runtime
from tests.support.pipeline import TERMINAL, build_stack

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
WORKFLOWS = ["full_pipeline", "transcribe_only", "lid_only", "full_pipeline", "lid_only", "transcribe_only"]


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM once the process is surely past start-up (its signal handlers installed)."""
        assert self.popen is not None
        time.sleep(max(0.0, self.started_at + 4 - time.monotonic()))
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=30)


def test_sigkill_router_and_workers_loses_no_job(pg_database_factory, make_settings, tmp_path: Path) -> None:
    url = pg_database_factory()
    settings = make_settings(database_url=url, lock_duration_seconds=1.0, retry_backoff_seconds=0.05)
    from shared.core.db import migrate

    migrate(settings)
    stack = build_stack(settings)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SPEECHFLOW_HOME": str(settings.speechflow_home),
        "QUEUE_LOCK_DURATION_SECONDS": "1",
        "RETRY_BACKOFF_SECONDS": "0.05",
        "PYTHONPATH": str(REPO),
    }
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    processes = [
        Process("router", [sys.executable, "-m", "shared.hosting", "run", "router"], env, tmp_path / "router.log")
    ]
    processes += [
        Process(
            kind, [sys.executable, "-m", "tests.support.crash_worker", kind, str(ledger)], env, tmp_path / f"{kind}.log"
        )
        for kind in ("lid", "whisper", "ai")
    ]
    for process in processes:
        process.start()
    chaos = random.Random(7)
    try:
        job_ids = []
        for workflow in WORKFLOWS * 2:
            fields = {} if workflow in ("full_pipeline", "lid_only") else {"source_language": "fra"}
            job_id = stack.submit(workflow, **fields)
            stack.start(job_id)
            job_ids.append(job_id)

        # Kill something every 0.6 s for 6 s, restarting it straight away.
        chaos_until = time.monotonic() + 6
        while time.monotonic() < chaos_until:
            time.sleep(0.6)
            victim = chaos.choice(processes)
            victim.kill()
            victim.start()

        deadline = time.monotonic() + 90
        statuses = {}
        while time.monotonic() < deadline:
            statuses = {job_id: stack.job(job_id)["status"] for job_id in job_ids}
            if all(status in TERMINAL for status in statuses.values()):
                break
            time.sleep(0.3)
        assert all(status == "completed" for status in statuses.values()), statuses
    finally:
        exit_codes = [process.stop() for process in processes if process.popen and process.popen.poll() is None]
        stack.client.close()

    assert exit_codes == [0] * len(exit_codes), "workers exit 0 on SIGTERM"
    completions = Counter(ledger.read_text().split())
    assert completions, "the workers did complete steps"
    assert max(completions.values()) == 1, f"a step completed twice: {completions.most_common(3)}"

    runtime = Runtime(settings)
    with runtime.sessions() as session:
        steps = session.scalars(select(ProcessingStep)).all()
        for step in steps:
            assert step.status == "completed"
            assert step.result_blob_path is not None
            assert runtime.blobs.exists(settings.results_container, step.result_blob_path)
        reclaimed = sum(1 for step in steps if step.attempt > 1)
    runtime.close()
    kills = {process.name: process.kills for process in processes}
    print(f"\ncrash test: {len(job_ids)} jobs, {len(steps)} steps, kills {kills}, reclaimed steps {reclaimed}")
    assert sum(kills.values()) >= 8
