"""The transcription worker on whisper-jobs: runs the TRANSCRIBE processor of the step registry
(shared/pipeline/transcribe.py) over one Whisper model loaded once per process."""

from __future__ import annotations

from typing import Any, ClassVar

from gpu_worker.base_worker import BaseWorker
from shared.pipeline import processor_for, spec_of
from shared.steps import StepContext


class WhisperWorker(BaseWorker):
    step_types: ClassVar[tuple[str, ...]] = ("TRANSCRIBE",)

    def warm_up(self) -> None:
        warm = spec_of("TRANSCRIBE").warm_up
        if warm is not None:
            warm(self.settings)

    def process(self, step: StepContext) -> dict[str, Any]:
        processor = processor_for(step.step_type)
        assert processor is not None
        return processor(step)
