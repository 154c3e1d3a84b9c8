"""The transcription worker on whisper-jobs: faster-whisper, word timestamps, VAD; writes the
transcript JSON plus SRT, VTT and TXT at deterministic blob paths."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from gpu_worker.base_worker import BaseWorker
from shared import subtitles
from shared.errors import Cancelled, ShutdownRequested
from shared.speech.transcriber import Transcriber, TranscriptionCancelled
from shared.steps import StepContext


class WhisperWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("TRANSCRIBE",)

    @cached_property
    def transcriber(self) -> Transcriber:
        """Configured now, loaded once per process on first use (or by warm_up)."""
        return Transcriber(self.settings.whisper, self.settings.model_cache_dir)

    def warm_up(self) -> None:
        # No CUDA where CUDA is configured is a clear error now, not a crash in the middle of a job.
        self.transcriber.check_device()
        self.transcriber.load()

    def process(self, step: StepContext) -> dict[str, Any]:
        with step.input_file() as path:
            try:
                transcript = self.transcriber.transcribe(
                    path,
                    language=step.job.language,
                    on_progress=step.report_progress,
                    should_stop=step.should_stop,
                    max_seconds=self.settings.max_audio_seconds,
                )
            except TranscriptionCancelled as error:
                if step.shutting_down:
                    raise ShutdownRequested("the worker is shutting down") from error
                raise Cancelled("job cancelled during transcription") from error
        segments = transcript["segments"]
        duration = transcript["duration"]  # of the decoded audio; no second look at the file
        step.put_result_file("srt", subtitles.to_srt(segments), content_type="application/x-subrip")
        step.put_result_file("vtt", subtitles.to_vtt(segments), content_type="text/vtt")
        step.put_result_file("txt", subtitles.to_txt(transcript), content_type="text/plain; charset=utf-8")
        step.job_updates.setdefault("audio_duration_seconds", duration)
        step.details.update(
            model=transcript["model"],
            device=transcript["device"],
            compute_type=transcript["compute_type"],
            batch_size=transcript.get("batch_size"),
            audio_duration_seconds=duration,
            model_seconds=transcript["processing_seconds"],
            language=transcript["language"],
        )
        return transcript
