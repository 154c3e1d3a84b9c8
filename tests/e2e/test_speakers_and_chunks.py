"""Speakers, channels and long recordings through the real local stack (`make up`'s host): a conversation
of two known voices with speaker_labels, the same turns as a two-channel call with channels=split, and
a recording cut into chunks that every idle transcription worker shares — including a worker killed in
the middle of its chunk, and a cancel in the middle of the file."""

from __future__ import annotations

import os
import signal
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.engines.audio import SAMPLE_RATE, decode
from tests.e2e.conftest import AUDIO, RunningStack
from tests.support.wer import normalise, wer

# Two voices: the LibriVox reader (a man) and a Kokoro voice (a woman), taking turns.
TURNS = [
    ("reader", "en/librivox-0870"),
    ("kokoro", "en/kokoro-counting"),
    ("reader", "en/librivox-0890"),
    ("kokoro", "en/kokoro-quick_brown_fox"),
]
GAP_SECONDS = 0.6
READINGS = ["en/librivox-0870", "en/librivox-0880", "en/librivox-0890", "en/librivox-0920", "en/librivox-0930"]


def write_wav(path: Path, channels: list[np.ndarray]) -> None:
    length = max(len(channel) for channel in channels)
    frames = np.zeros((length, len(channels)), dtype=np.float32)
    for index, channel in enumerate(channels):
        frames[: len(channel), index] = channel
    pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def conversation(tmp: Path) -> tuple[Path, Path, list[tuple[str, float, float]]]:
    """A mono conversation, the same as a two-channel call (one voice a channel), and the true turns."""
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    mono: list[np.ndarray] = []
    sides: dict[str, list[np.ndarray]] = {"reader": [], "kokoro": []}
    truth = []
    at = 0.0
    for who, clip in TURNS:
        samples = decode(AUDIO / f"{clip}.wav")
        truth.append((who, at, at + len(samples) / SAMPLE_RATE))
        for name, side in sides.items():
            side.append(samples if name == who else np.zeros_like(samples))
            side.append(gap)
        mono += [samples, gap]
        at += (len(samples) + len(gap)) / SAMPLE_RATE
    write_wav(tmp / "conversation.wav", [np.concatenate(mono)])
    reader, kokoro = np.concatenate(sides["reader"]), np.concatenate(sides["kokoro"])
    write_wav(tmp / "call.wav", [reader, kokoro])
    # A real line: each microphone also hears the other party, 30 dB down (crosstalk).
    leak = 10 ** (-30 / 20)
    write_wav(tmp / "leaky-call.wav", [reader + leak * kokoro, kokoro + leak * reader])
    return tmp / "conversation.wav", tmp / "call.wav", truth


def true_speaker(truth: list[tuple[str, float, float]], start: float, end: float) -> str:
    middle = (start + end) / 2
    return min(
        truth, key=lambda turn: 0 if turn[1] <= middle <= turn[2] else min(abs(middle - turn[1]), abs(middle - turn[2]))
    )[0]


def word_error_rate_of_speakers(segments: list[dict[str, Any]], truth: list[tuple[str, float, float]]) -> float:
    """WDER: words whose label is wrong after the best one-to-one mapping of labels to true speakers."""
    words = [word for segment in segments for word in segment.get("words") or []]
    pairs = [(word["speaker"], true_speaker(truth, word["start"], word["end"])) for word in words]
    labels = sorted({label for label, _ in pairs})
    best = 0
    for mapping in (
        {labels[0]: "reader", **dict.fromkeys(labels[1:], "kokoro")},
        {labels[0]: "kokoro", **dict.fromkeys(labels[1:], "reader")},
    ):
        best = max(best, sum(1 for label, true in pairs if mapping[label] == true))
    return 1 - best / len(pairs)


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {
        "WHISPER_WORKERS": "2",
        "WHISPER_CPU_THREADS": "1",
        "TRANSCRIBE_CHUNK_SECONDS": "6",
        "LOCK_DURATION_SECONDS": "8",
        "DIARIZE_THREADS": "1",
        # Nothing here is 20 minutes long: the start-up compile for long recordings is not needed.
        "DIARIZE_WARMUP": "0",
    }
    with start_stack(components=("api", "router", "lid", "whisper", "diarize"), env=env) as running:
        yield running


def test_speaker_labels_name_who_said_each_word(stack: RunningStack, tmp_path: Path) -> None:
    mono, _call, truth = conversation(tmp_path)
    job_id = stack.submit(mono, "transcribe_only", source_language="eng", speakers_expected=2)
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    assert job["options"] == {"speakers_expected": 2}
    # Diarized beside a transcription that is itself cut in chunks (TRANSCRIBE_CHUNK_SECONDS is 6 here).
    assert {step["step_type"].split(".")[0] for step in job["steps"]} == {"TRANSCRIBE", "DIARIZE"}

    results = stack.results(job_id).json()
    transcript = results["transcript"]
    assert [speaker["speaker"] for speaker in transcript["speakers"]] == ["A", "B"]
    assert all(segment["speaker"] in {"A", "B"} for segment in transcript["segments"])
    assert word_error_rate_of_speakers(transcript["segments"], truth) <= 0.05

    srt = stack.results(job_id, "srt").text
    assert "[A] " in srt and "[B] " in srt
    assert "<v A>" in stack.results(job_id, "vtt").text


def test_openais_diarized_json_through_the_sdk_gives_each_segment_its_speaker(
    stack: RunningStack, tmp_path: Path
) -> None:
    """What a client of OpenAI's gpt-4o-transcribe-diarize sends (diarized_json, chunking_strategy auto)
    gets the conversation's segments with speakers A and B, through the official SDK."""
    import openai

    mono, _call, truth = conversation(tmp_path)
    client = openai.OpenAI(
        api_key=stack.env["SPEECHFLOW_API_KEY"], base_url=f"{stack.base_url}/v1", max_retries=0, timeout=400
    )
    with mono.open("rb") as audio:
        answer = client.audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize",
            file=audio,
            response_format="diarized_json",
            chunking_strategy="auto",
            language="en",
        )

    assert answer.task == "transcribe" and answer.duration == pytest.approx(truth[-1][2] + GAP_SECONDS, abs=0.1)
    assert answer.usage is not None and answer.usage.seconds == answer.duration
    assert answer.segments[0].speaker == "A" and answer.segments[0].type == "transcript.text.segment"
    # Every segment's speaker is the one talking in it: A is the reader throughout, B the other voice.
    found = [(segment.speaker, true_speaker(truth, segment.start, segment.end)) for segment in answer.segments]
    assert {label: who for label, who in found} == {"A": "reader", "B": "kokoro"}, found
    assert len(set(found)) == 2, found
    reference = " ".join((AUDIO / f"{clip}.txt").read_text() for _who, clip in TURNS)
    assert wer(reference, answer.text) <= 0.15


def test_split_channels_make_each_channel_its_speaker(stack: RunningStack, tmp_path: Path) -> None:
    _mono, call, truth = conversation(tmp_path)
    job_id = stack.submit(call, "transcribe_only", source_language="eng", channels="split")
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    assert sorted(step["step_type"] for step in job["steps"]) == ["TRANSCRIBE", "TRANSCRIBE.1", "TRANSCRIBE.2"]

    transcript = stack.results(job_id).json()["transcript"]
    assert {(segment["speaker"], segment["channel"]) for segment in transcript["segments"]} == {("A", 0), ("B", 1)}
    starts = [segment["start"] for segment in transcript["segments"]]
    assert starts == sorted(starts)
    assert word_error_rate_of_speakers(transcript["segments"], truth) <= 0.02


def test_split_channels_ignore_the_other_party_leaking_into_a_microphone(stack: RunningStack, tmp_path: Path) -> None:
    _mono, _call, truth = conversation(tmp_path)
    job_id = stack.submit(tmp_path / "leaky-call.wav", "transcribe_only", source_language="eng", channels="split")
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    transcript = stack.results(job_id).json()["transcript"]
    assert word_error_rate_of_speakers(transcript["segments"], truth) <= 0.02
    spoken = " ".join((AUDIO / f"{clip}.txt").read_text(encoding="utf-8") for _who, clip in TURNS)
    assert len(normalise(transcript["text"]).split()) <= len(normalise(spoken).split()) + 3, "leaked words kept"


def test_split_on_a_one_channel_file_is_refused_at_start(stack: RunningStack) -> None:
    job_id = stack.upload(
        AUDIO / "en" / "kokoro-counting.wav", "transcribe_only", source_language="eng", channels="split"
    )
    started = stack.start(job_id)
    assert started.status_code == 422
    assert started.json()["error"]["code"] == "not_multichannel"
    assert stack.job(job_id)["status"] == "pending_upload"


def test_speaker_options_on_a_text_workflow_are_refused(stack: RunningStack) -> None:
    created = stack.client.post(
        "/jobs",
        json={
            "workflow_type": "summarize_only",
            "audio_filename": "notes.txt",
            "source_language": "eng",
            "speaker_labels": True,
        },
    )
    assert created.status_code == 422
    assert "speaker_labels" in created.json()["error"]["message"]


def readings(tmp: Path) -> tuple[Path, str]:
    gap = np.zeros(int(0.4 * SAMPLE_RATE), dtype=np.float32)
    parts = []
    for clip in READINGS:
        parts += [decode(AUDIO / f"{clip}.wav"), gap]
    write_wav(tmp / "readings.wav", [np.concatenate(parts)])
    text = " ".join((AUDIO / f"{clip}.txt").read_text(encoding="utf-8").strip() for clip in READINGS)
    return tmp / "readings.wav", text


def test_a_long_recording_is_shared_out_in_chunks_and_stitched_whole(stack: RunningStack, tmp_path: Path) -> None:
    path, reference = readings(tmp_path)
    job_id = stack.submit(path, "transcribe_only", source_language="eng")
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    parts = [step for step in job["steps"] if step["step_type"].startswith("TRANSCRIBE.")]
    assert len(parts) >= 4
    assert all(step["worker_id"] for step in parts)
    text = stack.results(job_id).json()["transcript"]["text"]
    assert wer(reference, text) <= 0.12
    # No word doubled at a seam: the transcript is not longer than the reading.
    assert len(normalise(text).split()) <= len(normalise(reference).split()) + 2


def test_a_chunk_whose_worker_dies_is_done_again_alone(stack: RunningStack, tmp_path: Path) -> None:
    path, reference = readings(tmp_path)
    job_id = stack.submit(path, "transcribe_only", source_language="eng")
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        job = stack.job(job_id)
        running = [s for s in job["steps"] if s["step_type"].startswith("TRANSCRIBE.") and s["status"] == "processing"]
        if running:
            worker = running[0]["worker_id"]
            pid = int(worker.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed = running[0]["step_type"]
        time.sleep(0.1)
    assert killed is not None, "no chunk was seen in progress"
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    steps = {step["step_type"]: step for step in job["steps"]}
    assert steps[killed]["status"] == "completed"
    assert wer(reference, stack.results(job_id).json()["transcript"]["text"]) <= 0.12


def test_cancel_in_the_middle_stops_every_chunk(stack: RunningStack, tmp_path: Path) -> None:
    path, _reference = readings(tmp_path)
    job_id = stack.submit(path, "transcribe_only", source_language="eng")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        steps = stack.job(job_id)["steps"]
        if any(s["step_type"].startswith("TRANSCRIBE.") and s["status"] == "processing" for s in steps):
            break
        time.sleep(0.1)
    cancelled = stack.client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    time.sleep(6)  # every running chunk checks for cancellation at least every 2 s
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    steps = {step["step_type"]: step["status"] for step in job["steps"]}
    assert "TRANSCRIBE" not in steps, "the join ran after a cancel"
    assert "processing" not in steps.values()
