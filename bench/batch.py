"""50 short files as one batch against 50 single jobs, through the local stack.

    .venv/bin/python bench/batch.py [--files 50] [--workflow transcribe_only] [--rounds 1]
                                    [--poll-seconds 0.5] [--model-cache DIR]

One stack (`python -m shared.hosting up --only api router whisper`, the transcription workers laid out
as `make up` lays them out) serves both ways, warmed up with one job first; each round runs the batch and
then the single jobs (`--rounds` alternates which goes first). The files are the short English, French and
Chinese kokoro fixtures (1.1–4.1 s each) taken in turn, uploaded as a client with local files would:

- batch: POST /batches with an `audio_filename` item per file, a PUT and a POST /jobs/{id}/start per
  item, then GET /batches/{id} every `--poll-seconds` until it has ended (what `speechflow submit` of
  several files does);
- single jobs: POST /jobs, PUT and start per file, then GET /jobs/{id} for every unfinished job every
  `--poll-seconds` (what a client tracking each job alone does, as `speechflow submit` did before).

It prints, per way: the wall time from the first request to the client seeing every job ended, the time
to submit (every job accepted and started), the server's own span (first created_at to last
completed_at, free of the polling pace) and how many HTTP requests the client made. The machine's
load average is printed at the start and the end: other processes share the cores.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transcribe import AUDIO, TERMINAL, load_average, local_stack

FILES = sorted(AUDIO.glob("*/kokoro-*.wav"))
LANGUAGES = {"en": "eng", "fr": "fra", "zh": "zho"}


@dataclass
class Outcome:
    way: str
    wall_seconds: float
    submit_seconds: float
    server_seconds: float
    requests: int
    failed: int


class CountingClient:
    """The stack's client, counting the requests the way under test makes."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.requests = 0

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        response = self.client.request(method, url, **kwargs)
        response.raise_for_status()
        return response


def files_for(count: int) -> list[Path]:
    return list(itertools.islice(itertools.cycle(FILES), count))


def _upload_and_start(api: CountingClient, path: Path, job_id: str, upload_url: str) -> None:
    api.call("PUT", upload_url, content=path.read_bytes(), headers={"x-ms-blob-type": "BlockBlob"})
    api.call("POST", f"/jobs/{job_id}/start")


def run_batch(api: CountingClient, files: list[Path], workflow: str, poll: float) -> tuple[list[str], float]:
    items = [{"audio_filename": path.name, **_language(path, workflow)} for path in files]
    created = api.call("POST", "/batches", json={"workflow_type": workflow, "items": items}).json()
    for path, item in zip(files, created["items"], strict=True):
        _upload_and_start(api, path, item["job_id"], item["upload_url"])
    submitted = time.monotonic()
    while api.call("GET", f"/batches/{created['batch_id']}").json()["status"] != "completed":
        time.sleep(poll)
    return list(created["job_ids"]), submitted


def run_singles(api: CountingClient, files: list[Path], workflow: str, poll: float) -> tuple[list[str], float]:
    job_ids = []
    for path in files:
        body = {"workflow_type": workflow, "audio_filename": path.name, **_language(path, workflow)}
        created = api.call("POST", "/jobs", json=body).json()
        _upload_and_start(api, path, created["job_id"], created["upload_url"])
        job_ids.append(created["job_id"])
    submitted = time.monotonic()
    pending = list(job_ids)
    while pending:
        pending = [job_id for job_id in pending if api.call("GET", f"/jobs/{job_id}").json()["status"] not in TERMINAL]
        if pending:
            time.sleep(poll)
    return job_ids, submitted


def _language(path: Path, workflow: str) -> dict[str, str]:
    return {"source_language": LANGUAGES[path.parent.name]} if workflow == "transcribe_only" else {}


def measure(
    way: str, run: Callable[..., tuple[list[str], float]], client: httpx.Client, files: list[Path], args: Any
) -> Outcome:
    api = CountingClient(client)
    start = time.monotonic()
    job_ids, submitted = run(api, files, args.workflow, args.poll_seconds)
    wall = time.monotonic() - start
    jobs = [client.get(f"/jobs/{job_id}").json() for job_id in job_ids]
    created = min(datetime.fromisoformat(job["created_at"]) for job in jobs)
    ended = max(datetime.fromisoformat(job["completed_at"]) for job in jobs if job["completed_at"])
    return Outcome(
        way=way,
        wall_seconds=wall,
        submit_seconds=submitted - start,
        server_seconds=(ended - created).total_seconds(),
        requests=api.requests,
        failed=sum(job["status"] != "completed" for job in jobs),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--workflow", default="transcribe_only", choices=["transcribe_only", "lid_only"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll-seconds", type=float, default=0.5)
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "speechflow-bench-models")
    args = parser.parse_args(argv)
    files = files_for(args.files)
    print(f"load average at start: {load_average()}")
    print(f"{args.files} files ({len(FILES)} fixtures of 1.1-4.1 s in turn), {args.workflow}")
    components = ("api", "router", "whisper") if args.workflow == "transcribe_only" else ("api", "router", "lid")
    outcomes: list[Outcome] = []
    with (
        tempfile.TemporaryDirectory(prefix="speechflow-bench-batch-") as home,
        local_stack(
            Path(home),
            model_cache=args.model_cache,
            env={},
            database_url=None,
            workers=1 if args.workflow == "transcribe_only" else 0,
            components=components,
        ) as stack,
    ):
        measure("warm-up", run_singles, stack.client, files[:2], args)
        ways = [("batch", run_batch), ("single jobs", run_singles)]
        for round_index in range(args.rounds):
            order = ways if round_index % 2 == 0 else ways[::-1]
            for way, run in order:
                outcome = measure(way, run, stack.client, files, args)
                outcomes.append(outcome)
                print(
                    f"round {round_index + 1} {way:>11}: wall {outcome.wall_seconds:6.1f} s"
                    f" (submitted in {outcome.submit_seconds:5.1f} s; server first-created to last-ended"
                    f" {outcome.server_seconds:6.1f} s); {outcome.requests} requests;"
                    f" {outcome.failed} not completed"
                )
    for way in ("batch", "single jobs"):
        walls = [outcome.wall_seconds for outcome in outcomes if outcome.way == way]
        requests = [outcome.requests for outcome in outcomes if outcome.way == way]
        mean_requests = sum(requests) / len(requests)
        print(f"{way:>11}: mean wall {sum(walls) / len(walls):.1f} s, mean requests {mean_requests:.0f}")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
