"""The `speechflow` command line, over the HTTP API (as any client would use it):

- `speechflow submit FILE… | --url URL…`: create a job for the file (or audio URL) — for several, one
  batch with a job each (shared/cli/batch.py) —, upload each through its upload_url, start it, and with
  `--wait` follow them all in one progress display, then print or save the results;
- `speechflow listen FILE`: stream a file to live transcription, captions as they come (shared/cli/live_client.py);
- `speechflow jobs list | show ID | results ID | cancel ID`;
- `speechflow keys create|list|revoke` manages API keys, straight in the database Settings points to.

Bad input, and anything the API refuses, ends with exit code 1 and one line saying why; a SpeechFlow
that cannot be reached, with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from shared.cli.batch import SubmittedBatch, follow_batch, submit_batch
from shared.cli.cues import cue_arguments, cue_rules
from shared.cli.errors import CliError, Unreachable
from shared.cli.keys import manage_keys
from shared.cli.transfer import checked as _check
from shared.cli.transfer import file_chunks as _file_chunks
from shared.core.config import Settings, SettingsError, get_settings, local_api_key
from shared.domain.status import JOB_STATUSES
from shared.domain.workflow import WORKFLOW_TYPES, WORKFLOWS

TERMINAL = {"completed", "partial_complete", "failed", "cancelled"}
FORMATS = ["json", "txt", "srt", "vtt"]
PARTS = ["transcript", "translation"]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input like any other: one line and exit code 1 (argparse would print the
    whole usage and exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class JobRequest:
    """What `submit` asks for, the same for every file."""

    workflow: str
    language: str | None = None
    target_language: str = "en"
    source_job_id: str | None = None
    callback_url: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    """Job options (speaker_labels, speakers_expected, channels, languages, code_switching, prompt, hotwords)
    given on the command line."""

    def body(self, *, path: Path | None, url: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow_type": self.workflow, "target_language": self.target_language}
        if path is not None:
            body["audio_filename"] = path.name
        if url is not None:
            body["audio_url"] = url
        for key, value in (
            ("source_language", self.language),
            ("source_job_id", self.source_job_id),
            ("callback_url", self.callback_url),
            *self.options,
        ):
            if value:
                body[key] = value
        return body


def submit(
    client: httpx.Client,
    source: Path | str | None,
    request: JobRequest,
    *,
    uploader: httpx.Client,
    on_upload: Callable[[int], None] = lambda _sent: None,
) -> str:
    """Create the job for a file (uploaded to its upload_url), an audio URL (fetched by SpeechFlow), or
    nothing (a source job's transcript); start it unless it was queued at once. Returns the job id."""
    path = source if isinstance(source, Path) else None
    url = source if isinstance(source, str) else None
    created = _check(client.post("/jobs", json=request.body(path=path, url=url)), "creating the job")
    job_id: str = created["job_id"]
    if path is not None and created.get("upload_url"):
        # Not the API client: its key must not travel to the blob store (on Azure, another service).
        upload = uploader.put(
            created["upload_url"],
            content=_file_chunks(path, on_upload),
            headers={"x-ms-blob-type": "BlockBlob", "Content-Length": str(path.stat().st_size)},
        )
        if upload.status_code not in (200, 201):
            raise CliError(f"uploading {path.name} failed ({upload.status_code}): {upload.text[:300]}")
    if created.get("status") == "pending_upload":
        _check(client.post(f"/jobs/{job_id}/start"), "starting the job")
    return job_id


def _fraction_done(job: dict[str, Any]) -> tuple[float, str]:
    """How far the job is (0..1) and what it is doing now."""
    total = max(1, len(WORKFLOWS[job["workflow_type"]].steps))
    done, current = 0.0, job["status"]
    for step in job["steps"]:
        if "." in step["step_type"]:
            continue  # a part of a fanned-out step; the step itself counts once
        if step["status"] == "completed":
            done += 1
        elif step["status"] == "processing":
            done += step.get("progress") or 0.0
            current = step["step_type"].lower()
    if job["status"] == "completed":
        done = total
    return min(done / total, 1.0), current


def follow(
    client: httpx.Client,
    job_ids: dict[str, str],
    *,
    progress: Progress,
    tasks: dict[str, TaskID],
    poll_seconds: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, dict[str, Any]]:
    """Poll every job until all are terminal, each on its own line of one progress display.
    `job_ids` maps each job id to its label (the file name)."""
    finished: dict[str, dict[str, Any]] = {}
    while True:
        for job_id, label in job_ids.items():
            if job_id in finished:
                continue
            job = _check(client.get(f"/jobs/{job_id}"), "reading the job")
            fraction, current = _fraction_done(job)
            progress.update(tasks[job_id], completed=100 * fraction, description=f"{label}: {current}")
            if job["status"] in TERMINAL:
                finished[job_id] = job
        if len(finished) == len(job_ids):
            return {job_id: finished[job_id] for job_id in job_ids}
        sleep(poll_seconds)


def results(
    client: httpx.Client,
    job_id: str,
    fmt: str,
    part: str = "transcript",
    cue_rules: dict[str, float] | None = None,
) -> str:
    """The results as JSON, subtitles or text; `cue_rules` (max_line_chars, max_lines, max_cue_seconds)
    cut srt and vtt cues."""
    params: dict[str, Any] = {} if fmt == "json" else {"format": fmt, "part": part}
    if fmt in ("srt", "vtt") and cue_rules:
        params.update(cue_rules)
    response = client.get(f"/jobs/{job_id}/results", params=params)
    if fmt == "json":
        return json.dumps(_check(response, "reading the results"), indent=2, ensure_ascii=False)
    if not response.is_success:
        _check(response, "reading the results")
    return response.text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="speechflow", description="SpeechFlow command line")
    sub = parser.add_subparsers(dest="command", required=True)

    cmd = sub.add_parser("submit", help="submit audio files (or URLs, or a transcript) and optionally wait")
    cmd.add_argument("files", type=Path, nargs="*", help="audio files, or a transcript for translate/summarize")
    cmd.add_argument("--url", action="append", default=[], help="audio to fetch from this URL (repeatable)")
    cmd.add_argument("--workflow", "-w", choices=WORKFLOW_TYPES, default="full_pipeline")
    cmd.add_argument("--language", "-l", help="source language (ISO 639-3 or 639-1), required by some workflows")
    cmd.add_argument("--target-language", default="en")
    cmd.add_argument("--source-job", help="reuse this job's transcript (translate_only / summarize_only)")
    cmd.add_argument("--callback-url")
    cmd.add_argument("--speakers", type=int, metavar="N", help="how many people speak (implies --speaker-labels)")
    cmd.add_argument("--speaker-labels", action="store_true", help="label who speaks when")
    cmd.add_argument("--channels", choices=["mix", "split"], help="split: each channel is its own speaker")
    cmd.add_argument("--languages", help="the languages the audio may be in, comma-separated (ISO 639-1 or -3): en,es")
    cmd.add_argument(
        "--code-switching", action="store_true", help="the language changes between turns: each in its own"
    )
    cmd.add_argument("--prompt", help="Whisper's initial prompt: spellings, names, style")
    cmd.add_argument("--hotword", action="append", default=[], help="a word or name to favour (repeatable)")
    cmd.add_argument("--wait", action="store_true", help="wait for the jobs to finish and print their results")
    cmd.add_argument("--format", "-f", choices=FORMATS, default="json")
    cmd.add_argument("--part", choices=PARTS, default="transcript", help="for srt, vtt and txt")
    cue_arguments(cmd)
    cmd.add_argument(
        "--output", "-o", type=Path, help="save the results to this file (a folder for several jobs) instead"
    )
    _connection_arguments(cmd)

    live = sub.add_parser(
        "listen", help="stream an audio file to live transcription and show the captions as they come"
    )
    live.add_argument("file", type=Path, help="the audio file, sent as a microphone would send it")
    live.add_argument("--speed", type=float, default=1.0, help="send this many times faster than real time")
    live.add_argument("--language", "-l", help="the language spoken (ISO 639-1 or 639-3); found per turn otherwise")
    live.add_argument("--json", action="store_true", help="print the server's events as JSON lines instead")
    _connection_arguments(live)

    jobs = sub.add_parser("jobs", help="list, show, read and cancel jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES)
    listing.add_argument("--workflow", choices=WORKFLOW_TYPES)
    listing.add_argument("--limit", type=int, default=20)
    show = jobs_sub.add_parser("show", help="a job's status, steps and options (JSON)")
    read = jobs_sub.add_parser("results", help="a job's results")
    read.add_argument("--format", "-f", choices=FORMATS, default="json")
    read.add_argument("--part", choices=PARTS, default="transcript", help="for srt, vtt and txt")
    cue_arguments(read)
    read.add_argument("--output", "-o", type=Path, help="save the results to this file instead of printing them")
    cancel = jobs_sub.add_parser("cancel", help="cancel a job that has not ended")
    for command in (listing, show, read, cancel):
        if command is not listing:
            command.add_argument("job_id", help="the job's id")
        _connection_arguments(command)

    keys = sub.add_parser("keys", help="manage API keys (talks to the database directly)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; it is printed once and cannot be shown again")
    create.add_argument("--name", required=True, help="who or what the key is for")
    keys_sub.add_parser("list", help="list keys (ids and names, never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the id shown by `keys list` (the part after sfk_)")
    return parser


def _connection_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--api", default=None, help="API base URL (default: SPEECHFLOW_PUBLIC_URL or localhost:7071)")
    command.add_argument(
        "--api-key", default=None, help="API key (default: SPEECHFLOW_API_KEY, else the key `make up` made)"
    )


def main(
    argv: list[str] | None = None,
    *,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run one command. `http` is the client to talk to SpeechFlow with (headers already set), for an
    in-process app; by default a client for `--api` with `--api-key` is made."""
    console = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "keys":
            return manage_keys(args, settings=get_settings(), console=console)
        _check_arguments(args)
        settings = get_settings()
        api = args.api or settings.public_base_url
        if args.command == "listen":
            return _listen_command(args, api, args.api_key or _default_api_key(settings), console=console)
        if http is not None:
            return _run(args, http, http, console=console, sleep=sleep)
        api_key = (
            args.api_key
            or (settings.api_key.get_secret_value() if settings.api_key else None)
            or local_api_key(settings)
        )
        headers = {"x-api-key": api_key} if api_key else {}
        try:
            with httpx.Client(base_url=api, timeout=30, headers=headers) as client, _uploader() as uploader:
                return _run(args, client, uploader, console=console, sleep=sleep)
        except httpx.HTTPError as error:
            raise Unreachable(f"cannot reach SpeechFlow at {api}: {error}") from error
    except CliError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 1
    except Unreachable as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    except SettingsError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2


def _default_api_key(settings: Settings) -> str | None:
    return (settings.api_key.get_secret_value() if settings.api_key else None) or local_api_key(settings)


def _listen_command(args: argparse.Namespace, api: str, api_key: str | None, *, console: Console) -> int:
    """`speechflow listen` (shared/cli/live_client.py): refusals as CliError, an endpoint not answering as
    Unreachable."""
    # lazy: websockets, PyAV and numpy load only for `speechflow listen`, not for the other commands
    from shared.cli.live_client import LiveError, LiveUnreachable, listen
    from shared.engines.audio import AudioError  # lazy: as above

    try:
        listen(args.file, api=api, api_key=api_key, speed=args.speed, language=args.language, as_json=args.json)
    except (LiveError, AudioError) as error:
        raise CliError(f"{args.file.name}: {error}") from None
    except LiveUnreachable as error:
        raise Unreachable(str(error)) from None
    except ValueError as error:
        raise CliError(str(error)) from None
    return 0


def _uploader() -> httpx.Client:
    # A large upload may take long as a whole; each write may not.
    return httpx.Client(timeout=httpx.Timeout(30.0, write=None))


def _check_arguments(args: argparse.Namespace) -> None:
    """What argparse cannot say: refused here, before anything is sent."""
    if args.command == "submit":
        if args.files and args.url:
            raise CliError("give files or --url, not both")
        for path in args.files:
            if not path.is_file():
                raise CliError(f"{path} is not a file")
        for url in args.url:
            if not url.startswith(("https://", "http://")):
                raise CliError(f"--url {url}: not an http(s) URL")
        if args.speakers is not None and not 1 <= args.speakers <= 20:
            raise CliError("--speakers: give a number from 1 to 20")
        if args.output is not None and len(args.files) + len(args.url) > 1 and args.output.is_file():
            raise CliError(f"--output {args.output}: several jobs need a folder, not a file")
    if args.command == "listen":
        if not args.file.is_file():
            raise CliError(f"{args.file} is not a file")
        if not 0.1 <= args.speed <= 100:
            raise CliError("--speed: give a number from 0.1 to 100")
    if args.command == "submit" or (args.command == "jobs" and args.jobs_command == "results"):
        cue_rules(args)
    if args.command == "jobs" and args.jobs_command == "list" and not 1 <= args.limit <= 500:
        raise CliError("--limit: give a number from 1 to 500")


def _run(
    args: argparse.Namespace,
    client: httpx.Client,
    uploader: httpx.Client,
    *,
    console: Console,
    sleep: Callable[[float], None],
) -> int:
    if args.command == "submit":
        return _submit_command(args, client, uploader, console=console, sleep=sleep)
    command = args.jobs_command
    if command == "list":
        params = {"limit": args.limit, "status": args.status, "workflow_type": args.workflow}
        listing = _check(client.get("/jobs", params={k: v for k, v in params.items() if v}), "listing the jobs")
        for job in listing["items"]:
            language = job.get("detected_language") or job.get("source_language") or "-"
            fields = (job["job_id"], job["status"], job["workflow_type"], language, job["created_at"][:19])
            print("\t".join((*fields, job["audio_filename"])))
        console.print(f"{len(listing['items'])} of {listing['total']} jobs")
    elif command == "show":
        print(json.dumps(_check(client.get(f"/jobs/{args.job_id}"), "reading the job"), indent=2, ensure_ascii=False))
    elif command == "results":
        _emit(results(client, args.job_id, args.format, args.part, cue_rules(args)), args.output, console=console)
    else:
        # DELETE on a job that has ended purges its data; `cancel` only ever stops a running one.
        job = _check(client.get(f"/jobs/{args.job_id}"), "reading the job")
        if job["status"] in TERMINAL:
            raise CliError(f"job {args.job_id} has already ended ({job['status']}); there is nothing to cancel")
        cancelled = _check(client.delete(f"/jobs/{args.job_id}"), "cancelling the job")
        console.print(f"job {cancelled['job_id']} {cancelled['status']}")
    return 0


def _submit_command(
    args: argparse.Namespace,
    client: httpx.Client,
    uploader: httpx.Client,
    *,
    console: Console,
    sleep: Callable[[float], None],
) -> int:
    options = (
        ("speakers_expected", args.speakers),
        ("speaker_labels", args.speaker_labels),
        ("channels", args.channels),
        ("languages", [code.strip() for code in args.languages.split(",") if code.strip()] if args.languages else None),
        ("code_switching", args.code_switching),
        ("prompt", args.prompt),
        ("hotwords", args.hotword or None),
    )
    request = JobRequest(
        workflow=args.workflow,
        language=args.language,
        target_language=args.target_language,
        source_job_id=args.source_job,
        callback_url=args.callback_url,
        options=options,
    )
    sources: list[Path | str | None] = [*args.files, *args.url] or [None]
    labels = [_label(source, args.source_job) for source in sources]
    wait = args.wait or args.output is not None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    job_ids: dict[str, str] = {}
    batch: SubmittedBatch | None = None
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, TaskID] = {}
        if len(sources) > 1:  # several files or URLs: one batch (shared/cli/batch.py)
            several = [source for source in sources if source is not None]
            batch = submit_batch(
                client, uploader, several, labels, request.body(path=None, url=None), progress=progress, sleep=sleep
            )
            job_ids, tasks = batch.labels, batch.tasks
        for source, label in zip(sources, labels, strict=True) if batch is None else ():
            size = source.stat().st_size if isinstance(source, Path) else 0
            task = progress.add_task(f"{label}: uploading" if size else f"{label}: submitting", total=100)

            def advance(sent: int, task: TaskID = task, size: int = size) -> None:
                progress.advance(task, 100 * sent / size if size else 0)

            try:
                job_id = submit(client, source, request, uploader=uploader, on_upload=advance)
            except CliError as error:
                raise CliError(f"{label}: {error}") from None
            job_ids[job_id] = label
            tasks[job_id] = task
            progress.update(task, completed=0, description=f"{label}: queued")
        if not wait:
            progress.stop()
            for job_id in job_ids:
                print(job_id)
            return 0
        if batch is not None:
            finished = follow_batch(client, batch, progress=progress, sleep=sleep)
        else:
            finished = follow(client, job_ids, progress=progress, tasks=tasks, sleep=sleep)
    failed = 0
    outputs: list[tuple[str, str]] = []
    for job_id, job in finished.items():
        label = job_ids[job_id]
        if job["status"] in ("failed", "cancelled"):
            failed += 1
            console.print(f"[red]{label}: job {job_id} {job['status']}:[/red] {job.get('error_message') or ''}")
            continue
        if job["status"] == "partial_complete":
            console.print(f"[yellow]{label}: partially complete:[/yellow] {job.get('error_message') or ''}")
        outputs.append((label, results(client, job_id, args.format, args.part, cue_rules(args))))
    _emit_many(outputs, args.output, args.format, console=console)
    return 1 if failed else 0


def _label(source: Path | str | None, source_job: str | None) -> str:
    if isinstance(source, Path):
        return source.name
    if isinstance(source, str):
        return source.rsplit("/", 1)[-1].split("?", 1)[0] or source
    return f"job {source_job}" if source_job else "job"


def _emit(text: str, output: Path | None, *, console: Console) -> None:
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(f"results saved to {output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _emit_many(outputs: list[tuple[str, str]], output: Path | None, fmt: str, *, console: Console) -> None:
    """One job's results as they are; several: each under a `==> name <==` line, or a file each in the
    `--output` folder."""
    if len(outputs) == 1 and (output is None or not output.is_dir()):
        _emit(outputs[0][1], output, console=console)
        return
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for label, text in outputs:
            _emit(text, output / f"{Path(label).stem}.{fmt}", console=console)
        return
    for label, text in outputs:
        sys.stdout.write(f"==> {label} <==\n")
        _emit(text, None, console=console)


if __name__ == "__main__":
    sys.exit(main())
