"""SUMMARIZE: a summary and key points of the transcript through the text model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.core.errors import BlobNotFound
from shared.domain.languages import is_english
from shared.domain.registry import StepSpec
from shared.domain.results import Summary, Translation
from shared.engines.text import make_text_model
from shared.steps.inputs import load_transcript, read_result
from shared.steps.translate import record_model

if TYPE_CHECKING:
    from shared.steps.context import StepContext


def process(step: StepContext) -> Summary:
    transcript = load_transcript(step).transcript
    text = "\n".join(segment.text for segment in transcript.segments if segment.text) or transcript.text
    # A code-switching transcript lists every language heard; any one may not be English.
    spoken = [entry.language for entry in transcript.languages or []]
    language = ", ".join(spoken) if len(spoken) > 1 else transcript.language
    model = make_text_model(step.settings, should_stop=step.should_stop)
    foreign = not all(is_english(code) for code in spoken) if spoken else not is_english(language)
    if model.engine == "extractive" and foreign:
        # An extractive summary quotes its input: quote the English translation where there is one.
        english = _english_translation(step)
        if english is not None:
            text, language = english, "en"
    found = model.summarize(text, language=language) if text.strip() else {"summary": "", "key_points": []}
    record_model(step, model)
    return Summary.model_validate({**found, "engine": model.engine, "model": model.model})


def _english_translation(step: StepContext) -> str | None:
    try:
        translation = read_result(step, "TRANSLATE", Translation, job_id=step.job.source_job_id or step.job.id)
    except BlobNotFound:
        return None
    if not is_english(translation.target_language):
        return None
    return "\n".join(segment.text for segment in translation.segments if segment.text.strip()) or None


SPEC = StepSpec(
    name="SUMMARIZE",
    title="Summary",
    queue="azure-ai-jobs",
    queue_setting="azure_ai_queue",
    component="azure-ai",
    result=Summary,
    inputs=("transcript", "TRANSLATE"),
    process=process,
)
