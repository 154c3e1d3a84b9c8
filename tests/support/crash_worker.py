"""A worker process for the crash tests: `python -m tests.support.crash_worker KIND LEDGER`.

It handles one queue's step types with a short sleep standing in for real work, and appends the step
id to LEDGER each time it completes a step — so a test can count completions across SIGKILLs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from shared.core.config import Settings
from shared.domain.messages import StepMessage
from shared.steps.runner import Outcome, StepContext
from shared.worker.component import BaseWorker

KINDS = {"lid": ("LID",), "whisper": ("TRANSCRIBE",), "ai": ("TRANSLATE", "SUMMARIZE")}


def make_worker(kind: str, ledger: Path, settings: Settings) -> BaseWorker:
    class CrashTestWorker(BaseWorker):
        step_types: ClassVar[tuple[str, ...]] = KINDS[kind]
        receive_wait_seconds: ClassVar[float] = 0.5

        def process(self, step: StepContext) -> dict[str, Any]:
            time.sleep(0.25)
            if step.step_type == "LID":
                step.job_updates["detected_language"] = "fra"
                return {"language": "fra", "confidence": 0.9}
            return {"text": f"{step.step_type} of {step.job.id}", "segments": [], "summary": "s", "key_points": []}

        def finished(self, message: StepMessage, outcome: Outcome) -> None:
            super().finished(message, outcome)
            if outcome == "completed":
                with ledger.open("a") as handle:
                    handle.write(f"{message.step_id}\n")

    return CrashTestWorker(settings)


if __name__ == "__main__":
    kind, ledger_path = sys.argv[1], Path(sys.argv[2])
    sys.exit(make_worker(kind, ledger_path, Settings()).run())
