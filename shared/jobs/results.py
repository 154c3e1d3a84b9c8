"""The typed reader of a job's results: each completed step's result, read as the model the step registry
names for it (docs/ARCHITECTURE.md, rule 3: a reader never sees a result of a step that is not completed).
The API, the OpenAI front and the dashboard read results only through it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.core.errors import BlobNotFound
from shared.domain.messages import result_blob_path
from shared.domain.models import Job
from shared.domain.registry import known, spec_of
from shared.domain.results import Diarization, LanguageResult, ResultModel, Summary, Transcript, Translation
from shared.domain.speaker_join import with_speakers
from shared.domain.workflow import split_part
from shared.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class JobResults:
    """The results of a job's completed steps, typed; skipped steps and parts of fanned-out steps are
    not results of their own."""

    found: dict[str, ResultModel] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.found and not self.skipped

    def get(self, step_type: str, model: type[Any]) -> Any:
        result = self.found.get(step_type)
        return result if isinstance(result, model) else None

    @property
    def language(self) -> LanguageResult | None:
        return self.get("LID", LanguageResult)

    @property
    def transcript(self) -> Transcript | None:
        """The transcript, with its speakers where the job was diarized."""
        found = self.found.get("TRANSCRIBE")
        if not isinstance(found, Transcript):
            return None
        return with_speakers(found, self.get("DIARIZE", Diarization))

    @property
    def translation(self) -> Translation | None:
        return self.get("TRANSLATE", Translation)

    @property
    def summary(self) -> Summary | None:
        return self.get("SUMMARIZE", Summary)


def load_results(runtime: Runtime, job: Job) -> JobResults:
    """Read each completed step's result blob as its registered result model. A result that cannot be
    read is logged and left out rather than failing the whole answer."""
    results = JobResults()
    for step in job.steps:
        if step.status != "completed" or split_part(step.step_type)[1] is not None or not known(step.step_type):
            continue
        if step.details and step.details.get("skipped"):
            results.skipped.add(step.step_type)
            continue
        path = step.result_blob_path or result_blob_path(job.id, step.step_type)
        try:
            data = runtime.blobs.get(runtime.settings.results_container, path)
            results.found[step.step_type] = spec_of(step.step_type).result.model_validate_json(data)
        except BlobNotFound:
            log.warning("result blob missing", extra={"action": "result_missing", "job_id": str(job.id)})
        except ValidationError as error:
            log.error(
                "result blob is not a valid %s result: %s",
                step.step_type,
                error.errors()[:1],
                extra={"action": "result_invalid", "job_id": str(job.id), "step_type": step.step_type},
            )
    return results
