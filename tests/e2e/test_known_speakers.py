"""Named speakers through the real local stack (`make up`'s host, with its diarize worker): a voice enrolled
with POST /speakers from one LibriVox clip names that reader in a conversation made of *other* clips of
him (segments, words, talk time and SRT), while the other voice stays "A"; and the same through the
OpenAI front with the official SDK, the voice given as OpenAI takes it (known_speaker_names[] and a data
URL in known_speaker_references[]), each diarized_json segment's speaker being the name."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import AUDIO, RunningStack
from tests.e2e.test_speakers_and_chunks import conversation, true_speaker

ENROLLMENT = AUDIO / "en" / "librivox-0920.wav"
"""The reader, from a clip that is not in the conversation (librivox-0870 and 0890 are)."""
NAMES = {"reader": "Elinor", "kokoro": "A"}
"""What each true speaker of the conversation should be called: the stranger keeps a letter."""


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    env = {"WHISPER_WORKERS": "1", "WHISPER_CPU_THREADS": "2", "DIARIZE_THREADS": "1", "DIARIZE_WARMUP": "0"}
    with start_stack(components=("api", "router", "whisper", "diarize"), env=env) as running:
        yield running


def test_a_job_with_an_enrolled_voice_names_its_speaker(stack: RunningStack, tmp_path: Path) -> None:
    enrolled = stack.client.post(
        "/speakers",
        data={"name": "Elinor"},
        files={"file": (ENROLLMENT.name, ENROLLMENT.read_bytes(), "audio/wav")},
        timeout=httpx.Timeout(300),
    )
    assert enrolled.status_code == 201, enrolled.text
    speaker_id = enrolled.json()["speaker_id"]
    assert "embedding" not in enrolled.json()

    mono, _call, truth = conversation(tmp_path)
    job_id = stack.submit(mono, "transcribe_only", source_language="eng", known_speakers=[speaker_id])
    job = stack.wait([job_id], timeout=400)[job_id]
    assert job["status"] == "completed", job
    assert job["options"]["known_speakers"] == [speaker_id]

    transcript = stack.results(job_id).json()["transcript"]
    words = [
        (w["speaker"], true_speaker(truth, w["start"], w["end"])) for s in transcript["segments"] for w in s["words"]
    ]
    named = sum(1 for label, who in words if label == NAMES[who])
    assert named / len(words) >= 0.95, words
    assert {s["speaker"] for s in transcript["segments"]} == {"Elinor", "A"}
    talk = {entry["speaker"]: entry for entry in transcript["speakers"]}
    assert talk["Elinor"]["known"] is True and talk["Elinor"]["speaker_id"] == speaker_id
    assert talk["A"]["known"] is False
    srt = stack.results(job_id, "srt").text
    assert "[Elinor] " in srt and "[A] " in srt

    assert stack.client.delete(f"/speakers/{speaker_id}").status_code == 204
    assert stack.client.get("/speakers").json()["total"] == 0


def diarized_with_reference(stack: RunningStack, audio: Path, name: str, clip: Path, **fields: Any) -> Any:
    """The recording through the OpenAI SDK's diarize request, with one known speaker's reference clip."""
    import openai

    reference = "data:audio/wav;base64," + base64.b64encode(clip.read_bytes()).decode()
    client = openai.OpenAI(
        api_key=stack.env["SPEECHFLOW_API_KEY"], base_url=f"{stack.base_url}/v1", max_retries=0, timeout=400
    )
    with audio.open("rb") as file:
        return client.audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize",
            file=file,
            response_format="diarized_json",
            language="en",
            extra_body={"known_speaker_names": [name], "known_speaker_references": [reference]},
            **fields,
        )


def test_openais_known_speaker_references_name_the_diarized_segments(stack: RunningStack, tmp_path: Path) -> None:
    mono, _call, truth = conversation(tmp_path)
    answer = diarized_with_reference(stack, mono, "Elinor", ENROLLMENT, chunking_strategy="auto")

    found = [(segment.speaker, true_speaker(truth, segment.start, segment.end)) for segment in answer.segments]
    assert {label: who for label, who in found} == {"Elinor": "reader", "A": "kokoro"}, found
    assert len(set(found)) == 2, found


def test_a_stranger_is_not_given_an_enrolled_name(stack: RunningStack, tmp_path: Path) -> None:
    """Only a voice absent from the conversation is enrolled (a Kokoro French voice): nobody takes its name."""
    mono, _call, _truth = conversation(tmp_path)
    answer = diarized_with_reference(stack, mono, "Marianne", AUDIO / "fr" / "kokoro-comptage.wav")

    assert {segment.speaker for segment in answer.segments} == {"A", "B"}


def test_the_sdks_stream_gets_the_named_segments_as_events(stack: RunningStack, tmp_path: Path) -> None:
    """stream=True, as the SDK sends it for gpt-4o-transcribe-diarize: text deltas, each diarized segment
    (the known voice named), then the whole text."""
    mono, _call, truth = conversation(tmp_path)
    events = list(diarized_with_reference(stack, mono, "Elinor", ENROLLMENT, stream=True))

    assert events[-1].type == "transcript.text.done" and events[-1].text.strip()
    segments = [event for event in events if event.type == "transcript.text.segment"]
    deltas = [event for event in events if event.type == "transcript.text.delta"]
    assert segments and [delta.segment_id for delta in deltas] == [segment.id for segment in segments]
    found = {(segment.speaker, true_speaker(truth, segment.start, segment.end)) for segment in segments}
    assert found == {("Elinor", "reader"), ("A", "kokoro")}, found
