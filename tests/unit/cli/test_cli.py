"""The `speechflow` command line against the API in this process (tests/support/pipeline.py: the real
app over SQLite in a temporary folder, the router and stub workers turned by hand while the command
waits), and its refusals: exit code 1 and one line on bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.cli import main as cli
from shared.core.config import Settings
from shared.core.db import migrate
from tests.support.pipeline import TINY_WAV, Stack, build_stack


@pytest.fixture
def stack(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Stack]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    migrate(settings)
    built = build_stack(settings)
    yield built
    built.client.close()
    built.runtime.close()


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "first.wav", tmp_path / "second.wav"]
    for path in paths:
        path.write_bytes(TINY_WAV)
    return paths


def run(stack: Stack, *argv: str) -> int:
    """The command, talking to the stack's app; while it waits, the stack's router and workers run."""
    return cli.main(list(argv), http=stack.client, sleep=lambda _seconds: stack.drive())


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error line, the last one written (a progress display may stand above it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), lines
    assert not any(line.startswith("error:") for line in lines[:-1]), lines
    return lines[-1]


def test_submit_several_files_waits_for_all_and_prints_each(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(stack, "submit", *map(str, clips), "-w", "transcribe_only", "-l", "fra", "--wait", "-f", "txt")

    out = capsys.readouterr().out
    assert code == 0
    assert out.count("bonjour le monde") == 2
    assert out.index("==> first.wav <==") < out.index("==> second.wav <==")
    listed = stack.client.get("/jobs").json()["items"]
    assert sorted(job["audio_filename"] for job in listed) == ["first.wav", "second.wav"]
    assert {job["status"] for job in listed} == {"completed"}


def test_submit_saves_each_result_in_the_output_folder(
    stack: Stack, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"

    code = run(stack, "submit", *map(str, clips), "-w", "transcribe_only", "-l", "fra", "-f", "srt", "-o", str(folder))

    assert code == 0
    for name in ("first.srt", "second.srt"):
        assert (folder / name).read_text().startswith("1\n00:00:00,000 --> 00:00:01,600\nbonjour le monde")
    assert capsys.readouterr().out == ""


def test_submit_without_wait_prints_the_job_ids_and_sends_the_options(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        stack,
        "submit",
        str(clips[0]),
        "-w",
        "transcribe_only",
        "-l",
        "eng",
        "--speakers",
        "2",
        "--prompt",
        "Dashwood, Norland",
        "--hotword",
        "Dashwood",
        "--hotword",
        "Norland",
    )
    job_id = capsys.readouterr().out.strip()

    assert code == 0
    assert uuid.UUID(job_id)
    assert run(stack, "jobs", "show", job_id) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "queued"
    assert shown["options"] == {
        "speakers_expected": 2,
        "prompt": "Dashwood, Norland",
        "hotwords": ["Dashwood", "Norland"],
    }


def test_submit_sends_code_switching_and_the_languages(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(stack, "submit", str(clips[0]), "-w", "transcribe_only", "--code-switching", "--languages", "es, en")
    job_id = capsys.readouterr().out.strip()

    assert code == 0
    assert run(stack, "jobs", "show", job_id) == 0
    assert json.loads(capsys.readouterr().out)["options"] == {"code_switching": True, "languages": ["spa", "eng"]}


def test_channels_split_on_a_one_channel_file_is_refused_in_one_line(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(stack, "submit", str(clips[0]), "-w", "transcribe_only", "-l", "eng", "--channels", "split")

    assert code == 1
    assert "first.wav: starting the job failed (422)" in one_line_error(capsys)


def test_jobs_list_results_and_cancel(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    done = stack.submit("transcribe_only", source_language="fra")
    stack.start(done)
    stack.drive(done)
    waiting = stack.submit("transcribe_only", source_language="fra")

    assert run(stack, "jobs", "list") == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(row[0], row[1]) for row in rows] == [(str(waiting), "pending_upload"), (str(done), "completed")]
    assert run(stack, "jobs", "list", "--status", "completed") == 0
    assert capsys.readouterr().out.split("\t")[0] == str(done)

    assert run(stack, "jobs", "results", str(done), "--format", "vtt") == 0
    assert capsys.readouterr().out.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.600\nbonjour le monde")
    assert run(stack, "jobs", "results", str(done)) == 0
    assert json.loads(capsys.readouterr().out)["transcript"]["text"] == "bonjour le monde"
    assert run(stack, "jobs", "results", str(done), "-f", "txt", "--part", "translation") == 1
    assert "(409)" in one_line_error(capsys)

    assert run(stack, "jobs", "cancel", str(waiting)) == 0
    assert f"job {waiting} cancelled" in capsys.readouterr().err
    assert run(stack, "jobs", "show", str(waiting)) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert run(stack, "jobs", "cancel", str(done)) == 1  # it has ended: nothing to cancel, nothing deleted
    assert "has already ended (completed)" in one_line_error(capsys)
    assert stack.client.get(f"/jobs/{done}/results").status_code == 200


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["submit", "missing.wav"], "missing.wav is not a file"),
        (["submit", "--url", "ftp://example.com/a.wav"], "not an http(s) URL"),
        (["submit", "--speakers", "0", "--url", "https://example.com/a.wav"], "--speakers"),
        (["submit", "--channels", "stereo"], "invalid choice"),
        (["jobs", "frobnicate"], "invalid choice"),
        (["jobs", "list", "--limit", "0"], "--limit"),
        (["jobs", "results", "x", "--format", "docx"], "invalid choice"),
        (["jobs", "show", "not-a-job-id"], "reading the job failed (422)"),
        (["jobs", "show", str(uuid.UUID(int=7))], "reading the job failed (404)"),
    ],
)
def test_bad_input_is_exit_code_1_and_one_line(
    stack: Stack, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(stack, *argv) == 1
    assert says in one_line_error(capsys)


def test_files_and_urls_together_are_refused(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(stack, "submit", str(clips[0]), "--url", "https://example.com/a.wav") == 1
    assert "not both" in one_line_error(capsys)


def test_an_unreachable_api_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["jobs", "list", "--api", "http://127.0.0.1:9", "--api-key", "k"])

    assert code == 2
    assert "cannot reach SpeechFlow at http://127.0.0.1:9" in capsys.readouterr().err


def test_submit_by_url_sends_audio_url_and_does_not_start_a_job_queued_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str, Any]] = []
    job_id = str(uuid.UUID(int=1))

    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.method == "POST" and request.url.path == "/jobs":
            return httpx.Response(201, json={"job_id": job_id, "status": "queued", "upload_url": None})
        return httpx.Response(500, json={"error": {"code": "unexpected", "message": "not expected"}})

    with httpx.Client(transport=httpx.MockTransport(api), base_url="http://api") as client:
        code = cli.main(["submit", "--url", "https://example.com/talk.mp3", "-w", "lid_only"], http=client)

    assert code == 0
    assert capsys.readouterr().out.strip() == job_id
    assert seen == [
        (
            "POST",
            "/jobs",
            {"workflow_type": "lid_only", "target_language": "en", "audio_url": "https://example.com/talk.mp3"},
        )
    ]


def test_several_files_are_one_batch_followed_with_one_request_a_round(
    stack: Stack, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    paths: list[str] = []
    original = stack.client.send

    def send(request: httpx.Request, **kwargs: Any) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        return original(request, **kwargs)

    stack.client.send = send  # type: ignore[method-assign]
    code = run(stack, "submit", *map(str, clips), "-w", "lid_only", "--wait", "-f", "json")

    assert code == 0, capsys.readouterr().err
    listed = stack.client.get("/jobs").json()["items"]
    assert len(listed) == 2 and {job["status"] for job in listed} == {"completed"}
    assert paths.count("POST /batches") == 1 and "POST /jobs" not in paths
    assert sum(path.startswith("POST /jobs/") and path.endswith("/start") for path in paths) == 2
    polls = [path for path in paths if path.startswith("GET /batches/")]
    assert polls and all(path.endswith("/results") for path in polls)
    assert not any(path.startswith("GET /jobs/") and path.count("/") == 2 for path in paths), "no poll per job"
    (batch_id,) = {path.split("/")[2] for path in polls}
    assert stack.client.get(f"/batches/{batch_id}").json()["status"] == "completed"


def test_a_refused_item_fails_alone_and_the_command_says_which(capsys: pytest.CaptureFixture[str]) -> None:
    batch_id, good, bad = str(uuid.UUID(int=9)), str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    sent: list[Any] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/batches":
            sent.append(json.loads(request.content))
            items = [
                {"job_id": good, "status": "queued", "upload_url": None, "upload_expires_at": None},
                {
                    "job_id": bad,
                    "status": "failed",
                    "upload_url": None,
                    "upload_expires_at": None,
                    "error_message": "item refused: audio_url host 10.0.0.1 resolves to a private address",
                },
            ]
            return httpx.Response(
                201, json={"batch_id": batch_id, "job_ids": [good, bad], "status": "processing", "items": items}
            )
        if request.url.path == f"/batches/{batch_id}/results":
            rows = [
                {"job_id": good, "status": "completed", "audio_filename": "a.mp3", "error_message": None},
                {
                    "job_id": bad,
                    "status": "failed",
                    "audio_filename": "b.mp3",
                    "error_message": "item refused: audio_url host 10.0.0.1 resolves to a private address",
                },
            ]
            return httpx.Response(200, json={"batch_id": batch_id, "status": "completed", "items": rows})
        if request.url.path == f"/jobs/{good}/results":
            return httpx.Response(200, text="hello\n")
        return httpx.Response(500, json={"error": {"code": "unexpected", "message": "not expected"}})

    urls = ["https://example.com/a.mp3", "https://10.0.0.1/b.mp3"]
    with httpx.Client(transport=httpx.MockTransport(api), base_url="http://api") as client:
        code = cli.main(
            ["submit", "--url", urls[0], "--url", urls[1], "-w", "lid_only", "--wait", "-f", "txt"],
            http=client,
            sleep=lambda _s: None,
        )

    assert code == 1  # one job failed
    assert sent == [
        {
            "workflow_type": "lid_only",
            "target_language": "en",
            "items": [{"audio_url": urls[0]}, {"audio_url": urls[1]}],
        }
    ]
    captured = capsys.readouterr()
    assert "hello" in captured.out
    assert "b.mp3: job" in captured.err and "private address" in captured.err
