"""`speechflow submit FILE --workflow W …`: create a job, upload through its upload_url, start it,
follow its steps with a progress bar, then print or save the results.

`speechflow keys create|list|revoke` manages API keys, straight in the database Settings points to."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared.config import Settings, get_settings, local_api_key
from shared.workflow import WORKFLOW_TYPES, WORKFLOWS

TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}
CHUNK = 1024 * 1024


class CliError(Exception):
    """A failure to report to the user in one line."""


def _check(response: httpx.Response, doing: str) -> dict[str, Any]:
    if response.is_success:
        data: dict[str, Any] = response.json()
        return data
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise CliError(f"{doing} failed ({response.status_code}): {message}")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def submit(
    client: httpx.Client,
    path: Path | None,
    *,
    workflow: str,
    language: str | None,
    target_language: str,
    source_job_id: str | None,
    callback_url: str | None,
) -> str:
    body: dict[str, Any] = {"workflow_type": workflow, "target_language": target_language}
    if path is not None:
        body["audio_filename"] = path.name
    for key, value in (("source_language", language), ("source_job_id", source_job_id), ("callback_url", callback_url)):
        if value:
            body[key] = value
    created = _check(client.post("/jobs", json=body), "creating the job")
    job_id: str = created["job_id"]
    if path is not None and created.get("upload_url"):
        upload = httpx.put(
            created["upload_url"],
            content=_file_chunks(path),
            headers={"x-ms-blob-type": "BlockBlob", "Content-Length": str(path.stat().st_size)},
            timeout=httpx.Timeout(30.0, write=None),  # a large upload may take long; each write may not
        )
        if upload.status_code not in (200, 201):
            raise CliError(f"uploading {path.name} failed ({upload.status_code}): {upload.text[:300]}")
    _check(client.post(f"/jobs/{job_id}/start"), "starting the job")
    return job_id


def follow(client: httpx.Client, job_id: str, *, console: Console, poll_seconds: float = 0.5) -> dict[str, Any]:
    """Poll the job until it is terminal, showing each step's progress."""
    job = _check(client.get(f"/jobs/{job_id}"), "reading the job")
    total = len(WORKFLOWS[job["workflow_type"]].steps)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"job {job_id[:8]}: {job['status']}", total=total)
        while True:
            done = 0.0
            current = job["status"]
            for step in job["steps"]:
                if step["status"] == "completed":
                    done += 1
                elif step["status"] == "processing":
                    done += step.get("progress") or 0.0
                    current = f"{step['step_type'].lower()}"
            progress.update(task, completed=min(done, total), description=f"job {job_id[:8]}: {current}")
            if job["status"] in TERMINAL:
                progress.update(task, completed=total if job["status"] == "completed" else done)
                return job
            time.sleep(poll_seconds)
            job = _check(client.get(f"/jobs/{job_id}"), "reading the job")


def results(client: httpx.Client, job_id: str, fmt: str) -> str:
    params = {} if fmt == "json" else {"format": fmt}
    response = client.get(f"/jobs/{job_id}/results", params=params)
    if fmt == "json":
        return json.dumps(_check(response, "reading the results"), indent=2, ensure_ascii=False)
    if not response.is_success:
        _check(response, "reading the results")
    return response.text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="speechflow", description="SpeechFlow command line")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("submit", help="submit an audio file (or a transcript) and optionally wait for results")
    cmd.add_argument("file", type=Path, nargs="?", help="audio file, or a transcript for translate/summarize")
    cmd.add_argument("--workflow", "-w", choices=WORKFLOW_TYPES, default="full_pipeline")
    cmd.add_argument("--language", "-l", help="source language (ISO 639-3 or 639-1), required by some workflows")
    cmd.add_argument("--target-language", default="en")
    cmd.add_argument("--source-job", help="reuse this job's transcript (translate_only / summarize_only)")
    cmd.add_argument("--callback-url")
    cmd.add_argument("--wait", action="store_true", help="wait for the job to finish and print its results")
    cmd.add_argument("--format", "-f", choices=["json", "txt", "srt", "vtt"], default="json")
    cmd.add_argument("--output", "-o", type=Path, help="save the results to this file instead of printing them")
    cmd.add_argument("--api", default=None, help="API base URL (default: SPEECHFLOW_PUBLIC_URL or localhost:7071)")
    cmd.add_argument(
        "--api-key", default=None, help="API key (default: SPEECHFLOW_API_KEY, else the key `make up` made)"
    )
    keys = sub.add_parser("keys", help="manage API keys (talks to the database directly)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; it is printed once and cannot be shown again")
    create.add_argument("--name", required=True, help="who or what the key is for")
    keys_sub.add_parser("list", help="list keys (ids and names, never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the id shown by `keys list` (the part after sfk_)")
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    if args.command == "keys":
        return manage_keys(args, settings=get_settings(), console=console)
    if args.file is not None and not args.file.is_file():
        console.print(f"[red]error:[/red] {args.file} is not a file")
        return 2
    settings = get_settings()
    api = args.api or settings.public_base_url
    api_key = (
        args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None) or local_api_key(settings)
    )
    headers = {"x-api-key": api_key} if api_key else {}
    try:
        with httpx.Client(base_url=api, timeout=30, headers=headers) as client:
            job_id = submit(
                client,
                args.file,
                workflow=args.workflow,
                language=args.language,
                target_language=args.target_language,
                source_job_id=args.source_job,
                callback_url=args.callback_url,
            )
            console.print(f"job {job_id} queued")
            if not args.wait and args.output is None:
                print(job_id)
                return 0
            job = follow(client, job_id, console=console)
            if job["status"] in ("failed", "cancelled"):
                console.print(f"[red]job {job['status']}:[/red] {job.get('error_message') or ''}")
                return 1
            if job["status"] == "partial_complete":
                console.print(f"[yellow]partially complete:[/yellow] {job.get('error_message') or ''}")
            text = results(client, job_id, args.format)
    except httpx.HTTPError as error:
        console.print(f"[red]error:[/red] cannot reach SpeechFlow at {api}: {error}")
        return 2
    except CliError as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        console.print(f"results saved to {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def manage_keys(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import make_engine, make_sessionmaker, migrate, transaction
    from shared.keys import create_key, list_keys, revoke_key

    if settings.effective_database_url.startswith("sqlite"):
        migrate(
            settings
        )  # the embedded default creates its database on first use; elsewhere migrations are a deploy step
    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            if args.keys_command == "create":
                new = create_key(session=session, name=args.name)
                console.print(f"created key {new.id} ({new.name}); it is shown once, keep it now:")
                print(new.key)
            elif args.keys_command == "list":
                for key in list_keys(session=session):
                    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.name}\t{key.created_at:%Y-%m-%d %H:%M}\t{state}")
            elif not revoke_key(session=session, key_id=args.key_id):
                console.print(f"[red]error:[/red] no active key {args.key_id}")
                return 1
            else:
                console.print(f"key {args.key_id} revoked")
    except SQLAlchemyError as error:
        console.print(f"[red]error:[/red] cannot use the database: {error.__class__.__name__}")
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
