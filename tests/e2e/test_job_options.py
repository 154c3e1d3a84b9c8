"""Job options through the real local stack. PII: spoken phone, card and e-mail (eSpeak NG fixtures) come
out masked in the transcript, its words and its subtitles, timings kept; a job without `redact_pii` keeps
them. Vocabulary: `hotwords` and `prompt` steer the spelling of a made-up name; a prompt longer than
Whisper reads fails the step with the reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.e2e.conftest import AUDIO, RunningStack

CLIPS = {
    "espeak-pii_phone.wav": "[PHONE]",
    "espeak-pii_card.wav": "[CREDIT_CARD]",
    "espeak-pii_email.wav": "[EMAIL]",
}


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[RunningStack]]) -> Iterator[RunningStack]:
    with start_stack(
        components=("api", "router", "whisper"), env={"WHISPER_WORKERS": "1", "WHISPER_CPU_THREADS": "2"}
    ) as running:
        yield running


def test_redact_pii_masks_spoken_numbers_and_addresses_everywhere(stack: RunningStack) -> None:
    masked = {
        clip: stack.submit(AUDIO / "en" / clip, "transcribe_only", source_language="eng", redact_pii=True)
        for clip in CLIPS
    }
    plain = stack.submit(AUDIO / "en" / "espeak-pii_phone.wav", "transcribe_only", source_language="eng")
    jobs = stack.wait([*masked.values(), plain], timeout=300)
    assert all(job["status"] == "completed" for job in jobs.values()), jobs

    for clip, job_id in masked.items():
        assert jobs[job_id]["options"] == {"redact_pii": True}
        transcript = stack.results(job_id).json()["transcript"]
        placeholder = CLIPS[clip]
        assert placeholder in transcript["text"], (clip, transcript["text"])
        assert not re.search(r"\d{3}", transcript["text"]), transcript["text"]
        assert "gmail" not in transcript["text"].lower()
        words = [word for segment in transcript["segments"] for word in segment["words"]]
        masks = [word for word in words if placeholder in word["word"]]
        assert len(masks) == 1 and masks[0]["end"] > masks[0]["start"]
        starts = [word["start"] for word in words]
        assert starts == sorted(starts)
        for fmt in ("srt", "vtt", "txt"):
            body = stack.results(job_id, fmt).text
            assert placeholder in body, (clip, fmt)
            assert not re.search(r"\d{3}", re.sub(r"\d\d:\d\d:\d\d[,.]\d{3}", "", body)), (clip, fmt, body)

    unmasked = stack.results(plain).json()["transcript"]["text"]
    assert "[PHONE]" not in unmasked
    assert re.search(r"\d", unmasked), unmasked


def test_vocabulary_steers_the_spelling_and_an_overlong_prompt_is_refused(stack: RunningStack) -> None:
    clip = AUDIO / "en" / "espeak-vocabulary.wav"
    plain = stack.submit(clip, "transcribe_only", source_language="eng")
    hotwords = stack.submit(clip, "transcribe_only", source_language="eng", hotwords=["Zylqor"])
    prompt = stack.submit(clip, "transcribe_only", source_language="eng", prompt="Release notes for Zylqor.")
    jobs = stack.wait([plain, hotwords, prompt], timeout=300)

    assert "zylqor" not in stack.results(plain).json()["transcript"]["text"].lower()
    for job_id in (hotwords, prompt):
        assert jobs[job_id]["status"] == "completed", jobs[job_id]
        assert "Zylqor" in stack.results(job_id).json()["transcript"]["text"]
    assert jobs[hotwords]["options"] == {"hotwords": ["Zylqor"]}
    assert jobs[prompt]["options"] == {"prompt": "Release notes for Zylqor."}

    # Counted with Whisper's own tokenizer at create: over 224 tokens is refused before anything is uploaded.
    overlong = {"workflow_type": "transcribe_only", "audio_filename": "a.wav", "source_language": "eng"}
    refused = stack.client.post("/jobs", json={**overlong, "prompt": "word " * 150, "hotwords": ["Zylqor"] * 90})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "prompt_too_long"
    assert "223" in error["message"]
    fits = stack.client.post("/jobs", json={**overlong, "prompt": "word " * 150})
    assert fits.status_code == 201, fits.text
