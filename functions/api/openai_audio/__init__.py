"""OpenAI-compatible audio: `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.

A synchronous front over an ordinary job, so that clients written for OpenAI's audio API (its SDKs,
`curl -F file=@…`) work unchanged: the request creates a job owned by the calling key, writes the
uploaded file to the job's audio blob, accepts it as every upload is (shared/jobs/intake.py), starts the
job, and polls the database until the part it needs is ready — the transcript, or the English
translation — or until OPENAI_WAIT_SECONDS have passed (then 504, with the job id to poll through
`GET /jobs/{id}`). The job shows in `GET /jobs` and on the dashboard like any other.

Workflows: a transcription with `language` is `transcribe_only`; without it the spoken language is
found first (LID), which `full_pipeline` does. `response_format=diarized_json` (OpenAI's format for
speaker-labelled transcripts) adds the DIARIZE step beside TRANSCRIBE, and the answer waits for both:
segments cut where the speaker changes, each with its speaker "A", "B", … . A translation is
`full_pipeline` into English, whose TRANSLATE step is skipped (and the transcript is the English
text) when the audio is English. The answer comes as soon as those parts are ready; the job's later
steps go on and their results stay readable through `GET /jobs/{id}/results`.

The front is split by what each part does: `forms` (the request), `rendering` (the answer), `errors`
(OpenAI's error shape) and `routes`.
"""

from functions.api.openai_audio.errors import JOB_ID_HEADER, OpenAIError, from_security_error
from functions.api.openai_audio.forms import MAX_FILE_BYTES, AudioRequest, parse_request
from functions.api.openai_audio.rendering import (
    WHISPER_LANGUAGE_NAMES,
    StepView,
    answer_source,
    compression_ratio,
    language_name,
    render_answer,
    verbose_json,
    wait_outcome,
)
from functions.api.openai_audio.routes import make_openai_audio_router

__all__ = [
    "JOB_ID_HEADER",
    "MAX_FILE_BYTES",
    "WHISPER_LANGUAGE_NAMES",
    "AudioRequest",
    "OpenAIError",
    "StepView",
    "answer_source",
    "compression_ratio",
    "from_security_error",
    "language_name",
    "make_openai_audio_router",
    "parse_request",
    "render_answer",
    "verbose_json",
    "wait_outcome",
]
