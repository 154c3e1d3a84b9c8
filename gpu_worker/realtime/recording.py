"""A live session, once closed, becomes a job like any other: its audio (the WAV the session wrote) in the
audio container, its turns as the TRANSCRIBE result (and, in full_pipeline, the language they were in as
the LID result), both steps recorded completed, then the job started — so the router carries it on
through the rest of its workflow (speakers, translation, summary) without transcribing it twice, and
GET /jobs, results, subtitles, retention, purge, usage and the dashboard treat it as any job.

The job's options come from the WebSocket URL's query (`workflow_type`, `speaker_labels`, `redact_pii`,
`callback_url`, `retention_seconds`, `target_language`, …), checked at the handshake (`live_job_request`).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpu_worker.realtime.session import LiveSession
from shared.bus import publish_committed
from shared.core.config import Settings
from shared.core.netsafety import UnsafeCallbackUrl, check_callback_url
from shared.domain.languages import to_iso639_3
from shared.domain.messages import result_blob_path
from shared.domain.models import ProcessingStep, utcnow
from shared.domain.options import JobOptions
from shared.domain.results import LanguageResult, Segment, Transcript, Word
from shared.jobs.store import create_job, start_job
from shared.runtime import Runtime
from shared.steps.outputs import redact, side_files

log = logging.getLogger(__name__)

LIVE_WORKFLOWS = ("transcribe_only", "full_pipeline")
_OPTION_FIELDS = ("speaker_labels", "speakers_expected", "redact_pii", "retention_seconds", "prompt")


class LiveJobRefused(ValueError):
    """The query's job options break a rule (answered 400 at the handshake)."""


@dataclass(frozen=True)
class LiveJobRequest:
    workflow_type: str
    target_language: str
    callback_url: str | None
    options: dict[str, Any]


def live_job_request(query: dict[str, list[str]], settings: Settings | None = None) -> LiveJobRequest:
    """The job a live session will be recorded as, from its URL's query; LiveJobRefused if it breaks a rule."""
    first = {name: values[0] for name, values in query.items() if values}
    workflow = first.get("workflow_type", "transcribe_only")
    if workflow not in LIVE_WORKFLOWS:
        raise LiveJobRefused(f"workflow_type of a live session must be one of {', '.join(LIVE_WORKFLOWS)}")
    raw: dict[str, Any] = {name: first[name] for name in _OPTION_FIELDS if name in first}
    try:
        options = JobOptions.model_validate(raw)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        raise LiveJobRefused(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None
    target = first.get("target_language", "en")
    try:
        to_iso639_3(target)
    except Exception:
        raise LiveJobRefused(f"target_language: unsupported language {target!r}") from None
    callback = first.get("callback_url")
    if callback is not None and settings is not None:
        try:
            check_callback_url(callback, settings)
        except UnsafeCallbackUrl as error:
            raise LiveJobRefused(f"callback_url: {error}") from None
    return LiveJobRequest(workflow, target, callback, options.model_dump(exclude_defaults=True))


class JobRecorder:
    """Records closed live sessions as jobs (runs on a thread of the live component)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, session: LiveSession, principal_id: str, query: dict[str, list[str]]) -> uuid.UUID | None:
        if session.recording.total == 0:
            return None
        return self._record(session, principal_id, live_job_request(query, self.runtime.settings))

    def recover(self, workdir: Path) -> list[uuid.UUID]:
        """Sessions a killed worker left behind (their audio and who opened them), recorded as ordinary jobs:
        the audio is uploaded and the job started, so its workflow transcribes it from the start. Nothing a
        client sent is lost; only the live turns are, and they are heard again."""
        recovered: list[uuid.UUID] = []
        for sidecar in sorted(workdir.glob("*.json")):
            audio = sidecar.with_suffix(".wav")
            try:
                opened = json.loads(sidecar.read_text())
                request = live_job_request(opened["query"], self.runtime.settings)
                seconds = _finish_wav(audio)
                if seconds > 0.1:
                    recovered.append(self._start_from_audio(sidecar.stem, opened["principal_id"], request, audio))
            except (OSError, ValueError, KeyError, LiveJobRefused) as error:
                log.warning("live session not recovered: %s", error, extra={"action": "live_recover_failed"})
            audio.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
        return recovered

    def _start_from_audio(self, session_id: str, principal_id: str, request: LiveJobRequest, audio: Path) -> uuid.UUID:
        runtime, settings = self.runtime, self.runtime.settings
        job_id = uuid.UUID(session_id)
        audio_path = f"{job_id}/live.wav"
        runtime.blobs.put_file(settings.audio_container, audio_path, audio, content_type="audio/wav")
        with runtime.sessions() as db, db.begin():
            create_job(
                session=db,
                job_id=job_id,
                audio_filename="live.wav",
                workflow_type=request.workflow_type,
                source_language=None,  # Whisper identifies it, as the live turns did
                target_language=request.target_language,
                callback_url=request.callback_url,
                source_job_id=None,
                audio_blob_path=audio_path,
                api_key_id=principal_id,
                options={**request.options, "live": True, "recovered": True},
            )
            start_job(session=db, bus=runtime.bus, queue=settings.job_events_queue, job_id=job_id)

        publish_committed(runtime.bus)
        log.info("live session recovered as a job", extra={"action": "live_job_recovered", "job_id": str(job_id)})
        return job_id

    def _record(self, session: LiveSession, principal_id: str, request: LiveJobRequest) -> uuid.UUID:
        runtime, settings = self.runtime, self.runtime.settings
        job_id = uuid.UUID(session.id)
        duration = session.recording.total / 16000
        language = _main_language(session)
        transcript = Transcript(
            language=language,
            text=" ".join(turn.text for turn in session.completed if turn.text).strip(),
            segments=[
                Segment(
                    start=turn.start,
                    end=turn.end,
                    text=turn.text,
                    words=[Word(**word) for word in turn.words],
                )
                for turn in session.completed
                if turn.text
            ],
            duration=round(duration, 3),
        )
        audio_path = f"{job_id}/live.wav"
        runtime.blobs.put_file(settings.audio_container, audio_path, session.recording.path, content_type="audio/wav")
        # What every step's result goes through before it is stored (shared/steps/outputs.py).

        if request.options.get("redact_pii"):
            transcript = redact(transcript, language=language or "eng")  # type: ignore[assignment]
        for extension, text, content_type in side_files(transcript):
            runtime.blobs.put(
                settings.results_container,
                result_blob_path(job_id, "TRANSCRIBE", extension),
                text.encode("utf-8"),
                content_type=content_type,
            )
        results = {"TRANSCRIBE": transcript.model_dump(mode="json", exclude_none=True)}
        if request.workflow_type == "full_pipeline":
            identified = LanguageResult(language=language or "und", duration=round(duration, 3), backend="live")
            results["LID"] = identified.model_dump(mode="json", exclude_none=True)
        for step, result in results.items():
            runtime.blobs.put(
                settings.results_container,
                result_blob_path(job_id, step),
                json.dumps(result, ensure_ascii=False).encode("utf-8"),
                content_type="application/json",
            )
        now = utcnow()
        with runtime.sessions() as db, db.begin():
            job = create_job(
                session=db,
                job_id=job_id,
                audio_filename="live.wav",
                workflow_type=request.workflow_type,
                source_language=language if request.workflow_type == "transcribe_only" else None,
                target_language=request.target_language,
                callback_url=request.callback_url,
                source_job_id=None,
                audio_blob_path=audio_path,
                api_key_id=principal_id,
                options={**request.options, "live": True},
            )
            job.audio_duration_seconds = round(duration, 3)
            job.detected_language = language
            for step in results:
                job.steps.append(
                    ProcessingStep(
                        id=uuid.uuid4(),
                        step_type=step,
                        status="completed",
                        started_at=now,
                        completed_at=now,
                        worker_id=f"live-{session.id[-12:]}",
                        result_blob_path=result_blob_path(job_id, step),
                        progress=1.0,
                        details={"live": True, "turns": len(session.completed)},
                    )
                )
            start_job(session=db, bus=runtime.bus, queue=settings.job_events_queue, job_id=job_id)

        publish_committed(runtime.bus)
        log.info(
            "live session recorded as a job",
            extra={"action": "live_job_recorded", "job_id": str(job_id), "seconds": round(duration, 3)},
        )
        return job_id


def _finish_wav(path: Path) -> float:
    """A WAV whose writer was killed has a header that says it holds nothing: rewrite it for the PCM that
    follows. Returns its seconds."""
    import wave

    data = path.read_bytes()[44:]
    data = data[: len(data) - len(data) % 2]
    with wave.open(str(path), "wb") as fixed:
        fixed.setnchannels(1)
        fixed.setsampwidth(2)
        fixed.setframerate(16000)
        fixed.writeframes(data)
    return len(data) / 2 / 16000


def _main_language(session: LiveSession) -> str | None:
    """The language most of the session's speech was in (ISO 639-3)."""
    spoken: dict[str, float] = {}
    for turn in session.completed:
        if turn.language:
            code = to_iso639_3(turn.language)
            spoken[code] = spoken.get(code, 0.0) + turn.end - turn.start
    if session.config.language:
        return to_iso639_3(session.config.language)
    return max(spoken, key=lambda code: spoken[code]) if spoken else None
