"""The join of a transcript and its diarization: every word and segment gets a speaker ("A", "B", …),
segments are cut where the speaker changes, and the speakers are listed with their talk time. Readers
of the transcript (the later steps, the API) apply it, so the transcript and the diarization, made side
by side, are each written once by their own step."""

from __future__ import annotations

from shared.domain.results import Diarization, Segment, SpeakerTalk, Transcript
from shared.domain.speaker_turns import attribute_speakers, talk_time


def with_speakers(transcript: Transcript, diarization: Diarization | None) -> Transcript:
    """The transcript with speakers from the diarization; unchanged without one, or when it has them
    already (split channels: each channel is its speaker)."""
    if transcript.speakers is not None or diarization is None or not transcript.timed:
        return transcript
    turns = [turn.model_dump(include={"start", "end", "speaker"}) for turn in diarization.turns]
    segments = attribute_speakers([s.model_dump(mode="json", exclude_none=True) for s in transcript.segments], turns)
    typed = [Segment.model_validate(segment) for segment in segments]
    return transcript.model_copy(
        update={
            "segments": typed,
            "speakers": [SpeakerTalk.model_validate(entry) for entry in talk_time(segments)],
        }
    )
