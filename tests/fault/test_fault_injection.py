"""Fault injection against the real local stack on PostgreSQL (see tests/fault/chaos.py).

`make test-fault` runs 100 jobs (FAULT_JOBS); `make test` runs a smaller round with the same faults.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.fault import chaos
from tests.support.pgcluster import PrivateCluster
from tests.support.receiver import webhook_receiver

JOBS = int(os.environ.get("FAULT_JOBS", "12"))

# The suite's 600 s per test is too short for `make test-fault`'s 100 jobs under chaos; the run's own
# bounds (wait_terminal: 180 s + 12 s a job) are what must hold, so the limit grows with the jobs.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.timeout(600 + 15 * JOBS),
]

RESULT_FILES = {
    "LID": {"lid.json"},
    "TRANSCRIBE": {"transcribe.json", "transcribe.srt", "transcribe.vtt", "transcribe.txt"},
    "TRANSLATE": {"translate.json", "translate.srt", "translate.vtt", "translate.txt"},
    "SUMMARIZE": {"summarize.json"},
}


def test_chaos_loses_no_job_and_duplicates_nothing(tmp_path: Path) -> None:
    try:
        PrivateCluster()
    except FileNotFoundError as missing:
        service_missing(str(missing))
    jobs = JOBS
    with webhook_receiver() as receiver:
        figures, seen = chaos.run(tmp_path, receiver, jobs=jobs)
    print("\n" + figures.lines())

    # every job terminal — and, with transient faults only, completed
    statuses = seen["statuses"]
    assert len(statuses) == jobs
    assert all(status in chaos.TERMINAL for status in statuses.values()), Counter(statuses.values())
    assert Counter(statuses.values())["completed"] == jobs, Counter(statuses.values())

    # no step completed twice
    completions = chaos.completions(seen["log"])
    assert completions, "the workers logged their completions"
    assert max(completions.values()) == 1, [key for key, count in completions.items() if count > 1]

    # every completed step's results exist, once, at their deterministic paths; nothing else does
    results_root = seen["home"] / "blobs" / "results"
    for job_id, job in seen["jobs"].items():
        expected: set[str] = set()
        for step in job["steps"]:
            assert step["status"] == "completed", (job_id, step)
            if not (step["details"] or {}).get("skipped"):
                expected |= RESULT_FILES[step["step_type"]] if step["step_type"] != "TRANSLATE" else {"translate.json"}
        found = {path.name for path in (results_root / str(job_id)).glob("*")}
        assert expected <= found, (job_id, expected - found)
        assert found <= set().union(*RESULT_FILES.values()), (job_id, found)

    # every callback delivered at least once, signed, for the job's final status
    by_job: dict[str, list[dict]] = {}
    for headers, body in receiver.requests:
        assert chaos.verify_signature(headers, body), "every delivery carries a valid signature"
        payload = json.loads(body)
        by_job.setdefault(payload["job_id"], []).append({"id": headers["webhook-id"], **payload})
    for job_id, job in seen["jobs"].items():
        deliveries = by_job.get(str(job_id), [])
        assert deliveries, f"no callback for {job_id}"
        assert {d["status"] for d in deliveries} == {job["status"]}
        assert all(w["status"] == "delivered" for w in job["webhooks"])

    # every dead letter accounted for: none left waiting, the poison among the handled ones
    dead_letters = seen["dead_letters"]
    assert all(row.state == "done" for row in dead_letters), [r for r in dead_letters if r.state != "done"]
    poison = [row for row in dead_letters if row.message_id.startswith("poison-")]
    assert len(poison) == figures.poison_messages
    assert all(row.dead_letter_reason == "InvalidMessage" for row in poison)

    assert seen["exit_code"] == 0, "the stack stops cleanly on SIGTERM"
    assert sum(figures.kills.values()) >= 3 and figures.stack_kills == 1 and figures.database_restarts == 1
