"""The language identification worker on lid-jobs (LID_MODEL: `whisper`, the default, or `mms`)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from gpu_worker.base_worker import BaseWorker
from shared.speech.lid import make_language_identifier
from shared.steps import StepContext


class LidWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("LID",)

    @cached_property
    def identifier(self) -> Any:
        """Configured now, loaded on first use (or by warm_up)."""
        return make_language_identifier(self.settings)

    def warm_up(self) -> None:
        self.identifier.check_device()
        self.identifier.load()

    def process(self, step: StepContext) -> dict[str, Any]:
        with step.input_file() as path:
            result: dict[str, Any] = self.identifier.identify(path, max_seconds=self.settings.max_audio_seconds)
        duration = result["duration"]  # identify() probed the file already
        step.job_updates.update(
            detected_language=result["language"],
            language_confidence=result["confidence"],
            audio_duration_seconds=duration,
        )
        step.details.update(
            backend=result.get("backend"),
            model=result.get("model"),
            windows=result.get("windows"),
            low_confidence=result.get("low_confidence"),
            audio_duration_seconds=duration,
        )
        return result
