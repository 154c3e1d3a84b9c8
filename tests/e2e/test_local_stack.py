"""The whole local stack, through HTTP only: API → job-events → router → lid-jobs / whisper-jobs → the
real workers with the bundled Whisper model → results blobs → GET /jobs/{id}/results.

One stack (SQLite, two transcription workers of one CPU thread each) serves the module; every fixture
job is submitted at once at the start and the tests read what came back. A second, smaller stack
checks the same path on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import Settings
from shared.engines.audio import probe
from shared.engines.speech.bundled_model import ensure_bundled_model
from tests.e2e.conftest import AUDIO, REPO, JobView, RunningStack
from tests.support.wer import close_enough, normalise, wer

pytestmark = [pytest.mark.model, pytest.mark.slow]

LIBRIVOX = sorted(f"en/{path.name}" for path in (AUDIO / "en").glob("librivox-*.wav"))
MEETING = "en/meeting-chan3.wav"
FLOAT32 = ["en/kokoro-hello_world.wav", "en/kokoro-counting.wav"]
LID_CLIPS = {
    "en/librivox-0890.wav": "eng",
    "en/kokoro-counting.wav": "eng",
    "fr/kokoro-bonjour_monde.wav": "fra",
    "fr/kokoro-comptage.wav": "fra",
    "fr/kokoro-pangrama.wav": "fra",
    "zh/kokoro-jishu.wav": "cmn",
    "zh/kokoro-nihao_shijie.wav": "cmn",
    "zh/kokoro-pangrama.wav": "cmn",
}
MAX_WER = 0.10
Jobs = dict[tuple[str, str], JobView]
"""(workflow, clip) → the job's final GET /jobs/{id}."""
Transcripts = dict[str, dict[str, Any]]
"""clip → GET /jobs/{id}/results."""
STACK_ENV = {"WHISPER_WORKERS": "2", "WHISPER_CPU_THREADS": "1"}


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(env=STACK_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def jobs(stack: RunningStack) -> Jobs:
    """Every fixture job, submitted at once: (workflow, clip) → its final GET /jobs/{id}."""
    submitted: dict[tuple[str, str], str] = {}
    for clip in [*LIBRIVOX, MEETING, *FLOAT32]:
        job_id = stack.submit(AUDIO / clip, "transcribe_only", source_language="eng")
        submitted["transcribe_only", clip] = job_id
    for clip in LID_CLIPS:
        submitted["lid_only", clip] = stack.submit(AUDIO / clip, "lid_only")
    finished = stack.wait(list(submitted.values()), timeout=150)
    return {key: finished[job_id] for key, job_id in submitted.items()}


@pytest.fixture(scope="module")
def transcripts(stack: RunningStack, jobs: Jobs) -> Transcripts:
    """clip → the transcript part of GET /jobs/{id}/results, for every transcribe_only job."""
    found = {}
    for (workflow, clip), job in jobs.items():
        if workflow == "transcribe_only":
            response = stack.results(job["job_id"])
            assert response.status_code == 200, response.text
            found[clip] = response.json()
    return found


def _step(job: dict[str, Any], step_type: str) -> dict[str, Any]:
    matching = [step for step in job["steps"] if step["step_type"] == step_type]
    assert len(matching) == 1, job["steps"]
    return matching[0]


# --- transcription ------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", LIBRIVOX)
def test_librivox_clip_is_transcribed_within_ten_percent_wer(
    jobs: Jobs,
    transcripts: Transcripts,
    clip: str,
) -> None:
    assert jobs["transcribe_only", clip]["status"] == "completed", jobs["transcribe_only", clip]
    reference = (AUDIO / clip).with_suffix(".txt").read_text()
    result = transcripts[clip]

    assert result["language"] == "eng"
    assert close_enough(reference, result["transcript"]["text"], MAX_WER), result["transcript"]["text"]


@pytest.mark.parametrize("clip", [*LIBRIVOX, MEETING])
def test_word_timestamps_increase_and_stay_inside_the_audio(transcripts: Transcripts, clip: str) -> None:
    duration = probe(AUDIO / clip).duration_seconds
    segments = transcripts[clip]["transcript"]["segments"]
    words = [word for segment in segments for word in segment["words"]]

    assert words, segments
    previous_end = 0.0
    for word in words:
        assert 0.0 <= word["start"] <= word["end"] <= duration + 0.01, word
        assert word["start"] >= previous_end - 0.01, word
        previous_end = word["end"]


def test_the_11khz_meeting_clip_transcribes(jobs: Jobs, transcripts: Transcripts) -> None:
    job = jobs["transcribe_only", MEETING]
    step = _step(job, "TRANSCRIBE")

    assert job["status"] == "completed", job
    assert step["details"]["audio_duration_seconds"] == pytest.approx(20.87, abs=0.05)
    # Real meeting speech has no reference; a dozen words spread over most of the 21 s is a transcript.
    text = transcripts[MEETING]["transcript"]["text"]
    assert len(text.split()) >= 12, text
    assert transcripts[MEETING]["transcript"]["segments"][-1]["end"] > 10.0


@pytest.mark.parametrize("clip", FLOAT32)
def test_float32_wav_decodes_and_transcribes(jobs: Jobs, transcripts: Transcripts, clip: str) -> None:
    reference = (AUDIO / clip).with_suffix(".txt").read_text()
    job = jobs["transcribe_only", clip]

    assert job["status"] == "completed", job
    assert _step(job, "TRANSCRIBE")["details"]["audio_duration_seconds"] == pytest.approx(
        probe(AUDIO / clip).duration_seconds, abs=0.01
    )
    # Whisper writes "1, 2, 3" for counting; compare words and digits alike.
    hypothesis = transcripts[clip]["transcript"]["text"]
    assert wer(_spell_digits(reference), _spell_digits(hypothesis)) <= 0.2, hypothesis


def test_steps_show_progress_and_what_ran(jobs: Jobs) -> None:
    for (workflow, clip), job in jobs.items():
        if workflow != "transcribe_only":
            continue
        step = _step(job, "TRANSCRIBE")
        details = step["details"]

        assert step["status"] == "completed"
        assert step["progress"] == 1.0
        assert step["retry_count"] == 0
        assert details["model"] == "bundled"
        assert details["device"] == "cpu"
        assert details["compute_type"] == "int8"
        duration = probe(AUDIO / clip).duration_seconds
        assert details["audio_duration_seconds"] == pytest.approx(duration, abs=0.01)
        assert 0 < details["processing_seconds"] < 60


@pytest.mark.parametrize("fmt", ["srt", "vtt", "txt"])
def test_subtitles_and_text_are_served(stack: RunningStack, jobs: Jobs, fmt: str) -> None:
    job_id = jobs["transcribe_only", MEETING]["job_id"]
    json_text = stack.results(job_id).json()["transcript"]["text"]

    response = stack.results(job_id, fmt)

    assert response.status_code == 200, response.text
    body = response.text
    if fmt == "srt":
        assert response.headers["content-type"].startswith("application/x-subrip")
        assert body.startswith("1\n")
        assert re.search(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", body, re.MULTILINE)
    elif fmt == "vtt":
        assert response.headers["content-type"].startswith("text/vtt")
        assert body.startswith("WEBVTT")
        assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", body, re.MULTILINE)
    else:
        assert response.headers["content-type"].startswith("text/plain")
    # Every format carries exactly the words of the transcript, in order.
    cue_lines = [line for line in body.splitlines() if not _CUE_FRAME.match(line)]
    assert normalise(" ".join(cue_lines)) == normalise(json_text)


# --- language identification ----------------------------------------------------------------------------


@pytest.mark.parametrize(("clip", "language"), LID_CLIPS.items())
def test_lid_only_names_the_spoken_language(
    stack: RunningStack,
    jobs: Jobs,
    clip: str,
    language: str,
) -> None:
    job = jobs["lid_only", clip]

    assert job["status"] == "completed", job
    assert job["detected_language"] == language
    assert 0.0 < job["language_confidence"] <= 1.0
    assert stack.results(job["job_id"]).json()["language"] == language


# --- failures and the CLI -------------------------------------------------------------------------------


def test_a_corrupt_upload_is_refused_at_once_and_never_retried(
    stack: RunningStack,
    jobs: Jobs,
    tmp_path: Path,
) -> None:
    """Random bytes named .wav: a permanent error saying "not an audio file", never a retry.

    Where the API probes uploads before queueing them, POST /start refuses the job (422) and it stays
    pending_upload, so the client may upload again; otherwise the worker fails the job on its first
    attempt. Either way nothing is retried and the caller reads why.
    """
    del jobs  # the queues are idle: whatever time this job takes is its own
    upload = tmp_path / "noise.wav"
    upload.write_bytes(os.urandom(64 * 1024))
    began = time.monotonic()

    job_id = stack.upload(upload, "transcribe_only", source_language="eng")
    started = stack.start(job_id)

    if started.status_code == 422:
        assert "not an audio file" in started.json()["error"]["message"]
        job = stack.job(job_id)
        assert job["status"] == "pending_upload"
        assert all(step["status"] == "pending" and step["retry_count"] == 0 for step in job["steps"])
        return
    assert started.status_code == 202, started.text
    job = stack.wait([job_id], timeout=30)[job_id]
    # A retry would wait at least RETRY_BACKOFF_SECONDS (2 s) first; a permanent error does not.
    assert time.monotonic() - began < 10
    assert job["status"] == "failed"
    assert "not an audio file" in (job["error_message"] or "")
    step = _step(job, "TRANSCRIBE")
    assert step["status"] == "failed"
    assert step["retry_count"] == 0
    assert "not an audio file" in (step["error_message"] or "")


def test_the_cli_prints_the_transcript(stack: RunningStack, jobs: Jobs) -> None:
    del jobs
    clip = AUDIO / "en" / "librivox-0930.wav"

    command = ["submit", str(clip), "--workflow", "transcribe_only", "--language", "eng", "--wait"]
    finished = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *command, "--format", "txt", "--api", stack.base_url],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr
    assert close_enough(clip.with_suffix(".txt").read_text(), finished.stdout, MAX_WER), finished.stdout


def test_the_host_runs_two_transcription_workers(stack: RunningStack) -> None:
    components = sorted(stack.children().values())

    assert components == ["api", "lid", "router", "whisper", "whisper"]


# --- the stack loses no quality -------------------------------------------------------------------------


def test_the_stack_transcribes_exactly_as_faster_whisper_does_directly(
    transcripts: Transcripts, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same file, same settings (those the stack's workers read): same text, so the same WER."""
    from faster_whisper import WhisperModel

    for name, value in STACK_ENV.items():
        monkeypatch.setenv(name, value)
    config = Settings().whisper
    model = WhisperModel(
        str(ensure_bundled_model(model_cache)),
        device=config.device,
        compute_type=config.compute_type,
        cpu_threads=config.cpu_threads,
    )

    # The decoder the stack uses on this machine: the batched pipeline unless WHISPER_BATCH_SIZE is 0.
    decoder: Any = model
    batch: dict[str, int] = {}
    if config.batch_size > 0:
        from faster_whisper import BatchedInferencePipeline

        decoder, batch = BatchedInferencePipeline(model), {"batch_size": config.batch_size}
    for clip in LIBRIVOX:
        segments, _ = decoder.transcribe(
            str(AUDIO / clip),
            language="en",
            beam_size=config.beam_size,
            vad_filter=config.vad_filter or bool(batch),
            word_timestamps=config.word_timestamps,
            **batch,
        )
        direct = " ".join(segment.text.strip() for segment in segments)
        through_stack = transcripts[clip]["transcript"]["text"]
        reference = (AUDIO / clip).with_suffix(".txt").read_text()

        assert through_stack == direct, clip
        assert wer(reference, through_stack) == wer(reference, direct)


# --- the same path on PostgreSQL ------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_stack_transcribes_and_identifies(
    start_stack: Callable[..., AbstractContextManager[RunningStack]],
    pg_database_factory: Callable[[], str],
) -> None:
    clip = AUDIO / "en" / "librivox-0880.wav"
    with start_stack(env={"DATABASE_URL": pg_database_factory()}) as running:
        transcribe = running.submit(clip, "transcribe_only", source_language="eng")
        identify = running.submit(AUDIO / "fr" / "kokoro-comptage.wav", "lid_only")
        finished = running.wait([transcribe, identify], timeout=120)
        text = running.results(transcribe, "txt").text

    assert finished[transcribe]["status"] == "completed", finished[transcribe]
    assert close_enough(clip.with_suffix(".txt").read_text(), text, MAX_WER), text
    assert finished[identify]["detected_language"] == "fra"


_CUE_FRAME = re.compile(r"^(WEBVTT.*|\d+|[\d:.,]+ --> [\d:.,]+.*)$")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_DIGITS = dict(enumerate(_NUMBERS))


def _spell_digits(text: str) -> str:
    return re.sub(r"\b(10|\d)\b", lambda match: _DIGITS[int(match.group(1))], text)
