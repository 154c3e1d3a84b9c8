"""A job's options beyond its workflow: what the client asked for on POST /jobs, recorded with the job
(jobs.options), shown in GET /jobs/{id}, and read by the workflow (which steps it has) and the steps
(how they run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator


def without_nul(value: str) -> str:
    """Refuse a NUL character: PostgreSQL stores no NUL in text (nor `\\u0000` in JSON), and no prompt,
    word or name needs one."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


NoNul = AfterValidator(without_nul)
Hotword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul]


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    speaker_labels: bool = False
    """Label who speaks when (the DIARIZE step)."""
    speakers_expected: int | None = Field(default=None, ge=1, le=20)
    """How many people speak, when the client knows; implies speaker_labels."""
    channels: Literal["mix", "split"] = "mix"
    """`mix`: downmix to mono. `split`: each channel is its own speaker, transcribed on its own."""
    channel_count: int | None = None
    """How many channels the upload has (recorded at start, from the probe)."""
    prompt: Annotated[str, StringConstraints(max_length=2000), NoNul] | None = None
    """Whisper's initial prompt: spelling and style to follow (at most 224 tokens)."""
    hotwords: tuple[Hotword, ...] | None = Field(default=None, max_length=100)
    """Words and names to favour."""
    redact_pii: bool = False
    """Mask card and phone numbers, other identifying numbers, e-mail addresses and names in the results."""
    redact_pii_audio: bool = False
    """Also make a copy of the audio with those stretches beeped or silenced (the REDACT_AUDIO step);
    implies redact_pii."""
    redact_pii_audio_method: Literal["beep", "silence"] = "beep"
    """What replaces a masked stretch of the audio: a 1 kHz tone, or silence."""
    retention_seconds: int | None = Field(default=None, ge=60)
    """Keep this job's data at most this long after it ends (never longer than the server's retention)."""
    languages: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=20)
    """The languages the audio may be in (ISO 639-3): language identification answers one of them."""
    audio_url: Annotated[str, StringConstraints(max_length=8192), NoNul] | None = None
    """Where the FETCH step gets the audio instead of an upload. Its query may hold a secret (an Azure
    SAS): logs and answers name the host only."""

    @model_validator(mode="before")
    @classmethod
    def _audio_redaction_masks_the_text(cls, data: Any) -> Any:
        # Redacted audio beeps what the masked transcript masks: asking for it asks for the masking.
        if isinstance(data, Mapping) and data.get("redact_pii_audio") is True:
            return {**data, "redact_pii": True}
        return data

    @property
    def wants_speakers(self) -> bool:
        return self.speaker_labels or self.speakers_expected is not None

    @property
    def split_channels(self) -> bool:
        return self.channels == "split"

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> JobOptions:
        return cls.model_validate(dict(stored or {}))

    def stored(self) -> dict[str, Any]:
        """What to keep in jobs.options: only what differs from the defaults."""
        return self.model_dump(mode="json", exclude_defaults=True)


AUDIO_ONLY_OPTIONS = (
    "speaker_labels",
    "speakers_expected",
    "channels",
    "prompt",
    "hotwords",
    "audio_url",
    "languages",
    "redact_pii_audio",
    "redact_pii_audio_method",
)
"""Options that only mean something for a workflow whose input is audio."""
