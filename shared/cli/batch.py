"""`speechflow submit` with several files or URLs: one batch (POST /batches) instead of a job at a time.

Files are items with `audio_filename`: the batch answers an upload URL for each, and each file is
uploaded and its job started (POST /jobs/{id}/start) as a single job's would be; URLs are items with
`audio_url`, queued by the batch itself. While waiting, one request a round (GET
/batches/{id}/results) follows every item, however many there are. An item the API refused is reported
as a failed job, beside the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress, TaskID

from shared.cli.errors import CliError
from shared.cli.transfer import checked, file_chunks

TERMINAL = frozenset({"completed", "partial_complete", "failed", "cancelled"})
START_TRIES = 10
"""A start refused with 429 (the key's rate limit, which a big batch draws on) is tried again this often,
after the Retry-After it was given."""


@dataclass
class SubmittedBatch:
    batch_id: str
    labels: dict[str, str] = field(default_factory=dict)
    """Each item's job id and its label (the file name), in the items' order."""
    tasks: dict[str, TaskID] = field(default_factory=dict)


def submit_batch(
    client: httpx.Client,
    uploader: httpx.Client,
    sources: list[Path | str],
    labels: list[str],
    fields: dict[str, Any],
    *,
    progress: Progress,
    sleep: Callable[[float], None],
) -> SubmittedBatch:
    """Create the batch with an item per source (`fields` for all of them), upload each file to its
    upload URL and start its job. A failed upload or start cancels the items not started yet (so that
    the batch can end) and stops the command."""
    items = [
        {"audio_filename": source.name} if isinstance(source, Path) else {"audio_url": source} for source in sources
    ]
    created = checked(client.post("/batches", json={**fields, "items": items}), "creating the batch")
    batch = SubmittedBatch(batch_id=created["batch_id"])
    answered: list[dict[str, Any]] = created["items"]
    for source, label, item in zip(sources, labels, answered, strict=True):
        job_id: str = item["job_id"]
        size = source.stat().st_size if isinstance(source, Path) else 0
        task = progress.add_task(f"{label}: uploading" if size else f"{label}: submitting", total=100)
        batch.labels[job_id], batch.tasks[job_id] = label, task
    for index, (source, label, item) in enumerate(zip(sources, labels, answered, strict=True)):
        job_id, task = item["job_id"], batch.tasks[item["job_id"]]
        if item["status"] == "failed":
            progress.update(task, description=f"{label}: refused")
            continue
        if isinstance(source, Path) and item.get("upload_url"):
            size = source.stat().st_size

            def advance(sent: int, task: TaskID = task, size: int = size) -> None:
                progress.advance(task, 100 * sent / size if size else 0)

            try:
                _upload(uploader, item["upload_url"], source, advance)
                _start(client, job_id, sleep=sleep)
            except CliError as error:
                _cancel_unstarted(client, answered[index:])
                raise CliError(f"{label}: {error}") from None
        progress.update(task, completed=0, description=f"{label}: queued")
    return batch


def _upload(uploader: httpx.Client, url: str, path: Path, advance: Callable[[int], None]) -> None:
    # Not the API client: its key must not travel to the blob store (on Azure, another service).
    upload = uploader.put(
        url,
        content=file_chunks(path, advance),
        headers={"x-ms-blob-type": "BlockBlob", "Content-Length": str(path.stat().st_size)},
    )
    if upload.status_code not in (200, 201):
        raise CliError(f"uploading {path.name} failed ({upload.status_code}): {upload.text[:300]}")


def _start(client: httpx.Client, job_id: str, *, sleep: Callable[[float], None]) -> None:
    for _ in range(START_TRIES - 1):
        response = client.post(f"/jobs/{job_id}/start")
        if response.status_code != 429:
            break
        sleep(float(response.headers.get("retry-after", "1")))
    else:
        response = client.post(f"/jobs/{job_id}/start")
    checked(response, "starting the job")


def _cancel_unstarted(client: httpx.Client, items: list[dict[str, Any]]) -> None:
    """Best effort: a job left waiting for its upload would keep the batch from ending."""
    for item in items:
        if item["status"] == "pending_upload":
            try:
                client.delete(f"/jobs/{item['job_id']}")
            except httpx.HTTPError:
                return


def follow_batch(
    client: httpx.Client,
    batch: SubmittedBatch,
    *,
    progress: Progress,
    sleep: Callable[[float], None],
    poll_seconds: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Poll the batch's results until every item's job has ended; each item on its own line of the
    progress display. Returns each job (its id, status and error) by id, in the items' order."""
    while True:
        listing = checked(client.get(f"/batches/{batch.batch_id}/results"), "reading the batch")
        items: list[dict[str, Any]] = listing["items"]
        for item in items:
            status = item["status"]
            done = 100 if status in TERMINAL else 50 if status == "processing" else 0
            label = batch.labels.get(item["job_id"], item["audio_filename"])
            progress.update(batch.tasks[item["job_id"]], completed=done, description=f"{label}: {status}")
        if all(item["status"] in TERMINAL for item in items):
            return {item["job_id"]: item for item in items}
        sleep(poll_seconds)
