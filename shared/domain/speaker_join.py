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
    plain = [s.model_dump(mode="json", exclude_none=True) for s in transcript.segments]
    segments = attribute_speakers(plain, turns, keep=diarization.names)
    typed = [Segment.model_validate(segment) for segment in segments]
    return transcript.model_copy(
        update={
            "segments": typed,
            "speakers": [_talk(entry, diarization) for entry in talk_time(segments)],
        }
    )


def _talk(entry: dict[str, object], diarization: Diarization) -> SpeakerTalk:
    """A speaker's talk time, with how it compares with the enrolled voices the job asked for."""
    talk = SpeakerTalk.model_validate(entry)
    if diarization.matches is None:
        return talk
    named = {match.speaker: match for match in diarization.matches if match.name is not None}
    if talk.speaker in named:
        match = named[talk.speaker]
        return talk.model_copy(update={"known": True, "speaker_id": match.speaker_id, "similarity": match.similarity})
    # A letter: how close its cluster came to each voice is in the diarization's `matches`.
    return talk.model_copy(update={"known": False})
