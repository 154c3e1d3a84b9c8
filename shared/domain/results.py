"""The typed results of the steps: what producers write to results/{job_id}/{step}.json and what the
router's neighbours (the next steps, the API, the dashboard) read back. One model per result kind;
there are no hand-written dict readers anywhere else.

Models accept fields they do not know (a newer producer's output stays readable by an older reader)
and keep them when written back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ResultModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class Word(ResultModel):
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = None


class Segment(ResultModel):
    """A stretch of speech. `start` and `end` are seconds from the start of the audio; both are None for
    a transcript that came without timings (an uploaded text)."""

    start: float | None = None
    end: float | None = None
    text: str
    words: list[Word] | None = None
    speaker: str | None = None
    channel: int | None = None
    language: str | None = None
    """ISO 639-3: the language this segment was transcribed in, where the job followed language changes
    (code_switching); otherwise the transcript's `language` holds for every segment."""

    @property
    def timed(self) -> bool:
        return self.start is not None and self.end is not None


class SpeakerTalk(ResultModel):
    speaker: str
    talk_seconds: float
    channel: int | None = None
    known: bool | None = None
    """Set when enrolled voices were asked for (known_speakers): whether this speaker took one's name."""
    speaker_id: str | None = None
    """The voice library's id of the enrolled voice it was named after."""
    similarity: float | None = None
    """Its cluster's best cosine similarity to the voices asked for (shared/domain/speaker_match.py)."""


class LanguageTalk(ResultModel):
    language: str
    """ISO 639-3."""
    talk_seconds: float


class SpeakerTurn(ResultModel):
    start: float
    end: float
    speaker: str


class SpeakerMatch(ResultModel):
    """How one diarized speaker compares with the enrolled voices the job asked for."""

    speaker: str
    """Its label in the turns: the enrolled voice's name when it took one, else the diarizer's label."""
    similarity: float
    """Its best cosine similarity to any voice asked for."""
    name: str | None = None
    speaker_id: str | None = None


class Diarization(ResultModel):
    """DIARIZE: who speaks when. Labels are the diarizer's, or the names of enrolled voices that matched
    (`matches`); the join with the transcript (shared/domain/speaker_join.py) keeps the names and calls
    the others "A", "B", … in order of first appearance."""

    turns: list[SpeakerTurn] = Field(default_factory=list)
    speakers: list[str] = Field(default_factory=list)
    duration: float | None = None
    speakers_expected: int | None = None
    matches: list[SpeakerMatch] | None = None
    """Set when the job asked for enrolled voices (known_speakers, or references on the OpenAI front)."""

    @property
    def names(self) -> frozenset[str]:
        """The labels that are enrolled voices' names."""
        return frozenset(match.speaker for match in self.matches or [] if match.name is not None)


class SpeakerEnrollment(ResultModel):
    """ENROLL: what became of a voice library enrollment. Never the voiceprint, which only the speaker's
    row holds (shared/jobs/speakers.py)."""

    speaker_id: str
    status: str
    """ready, or deleted (the speaker was deleted before its voiceprint was kept)."""
    speech_seconds: float | None = None


class LanguageResult(ResultModel):
    """LID: the spoken language (ISO 639-3) and how sure the identifier is."""

    language: str
    confidence: float | None = None
    duration: float | None = None
    backend: str | None = None
    model: str | None = None


class RedactedStretch(ResultModel):
    start: float
    end: float
    kind: str
    """The placeholder whose words were spoken there (`[PHONE]`, …)."""


class RedactedAudio(ResultModel):
    """REDACT_AUDIO: the upload as a WAV with the stretches where masked PII was spoken replaced; the WAV
    itself is `results/{job}/redact_audio.wav` (GET /jobs/{id}/redacted-audio)."""

    method: str
    sample_rate: int
    channels: int
    duration: float
    stretches: list[RedactedStretch] = Field(default_factory=list)


class Transcript(ResultModel):
    """TRANSCRIBE: the words spoken, in segments (with word timings where the engine gives them)."""

    language: str | None = None
    text: str = ""
    segments: list[Segment] = Field(default_factory=list)
    duration: float | None = None
    speakers: list[SpeakerTalk] | None = None
    languages: list[LanguageTalk] | None = None
    """With code_switching: each language heard and how long, the most spoken first (`language` is that
    one); each segment says its own."""

    @property
    def timed(self) -> bool:
        """Every segment has its times: subtitles can be made from it."""
        return bool(self.segments) and all(segment.timed for segment in self.segments)

    def full_text(self) -> str:
        return self.text.strip() or " ".join(segment.text for segment in self.segments if segment.text).strip()


class Translation(Transcript):
    """TRANSLATE: the transcript's segments in the target language, one for one (times and speakers kept)."""

    source_language: str | None = None
    target_language: str | None = None
    engine: str | None = None
    model: str | None = None


class Skipped(ResultModel):
    """A step the workflow recorded as done without running it."""

    skipped: bool = True
    reason: str = ""


class Summary(ResultModel):
    """SUMMARIZE: a short summary and its key points."""

    summary: str
    key_points: list[str] = Field(default_factory=list)
    engine: str | None = None
    model: str | None = None


class FetchedAudio(ResultModel):
    """FETCH: the audio fetched from the job's audio_url into the audio container. The URL's host only:
    its query may hold a secret (an Azure SAS)."""

    url_host: str
    size_bytes: int
    content_type: str | None = None
    duration: float | None = None
    channels: int | None = None
    sample_rate: int | None = None
    redirects: int = 0


def load(model: type[ResultModel], data: bytes | str | dict[str, Any]) -> Any:
    """Parse a stored result; raises pydantic.ValidationError when it is not of that kind."""
    if isinstance(data, dict):
        return model.model_validate(data)
    return model.model_validate_json(data)
