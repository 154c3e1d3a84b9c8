"""The step registry (shared/steps): every step a workflow names is registered, and every registered
queue has its deployment entries — a Bicep queue, a KEDA ScaledObject on it, and the Deployment that
ScaledObject scales."""

from __future__ import annotations

import pytest

from shared.core.config import Settings
from shared.domain.registry import all_queues, components, queue_for, registry, spec_of, step_queues, steps_on_queue
from shared.domain.results import ResultModel
from shared.domain.workflow import WORKFLOWS, JobState
from tests.unit.deploy.test_bicep import main, resolve
from tests.unit.deploy.test_k8s_manifests import deployments, queue_scaled_objects


def test_every_workflow_step_is_registered_with_a_result_model() -> None:
    for name, workflow in WORKFLOWS.items():
        for step in workflow.steps:
            spec = registry().get(step)
            assert spec is not None, f"{name} names {step}, which is not registered"
            assert issubclass(spec.result, ResultModel)
            assert spec.inputs, step


def test_parts_of_a_step_share_its_spec() -> None:
    assert spec_of("TRANSCRIBE.7") is spec_of("TRANSCRIBE")
    with pytest.raises(KeyError):
        spec_of("NOPE")


@pytest.mark.parametrize("queue", sorted(set(step_queues(Settings()).values())))
def test_every_registered_queue_has_its_deployment_entries(queue: str) -> None:
    assert queue in resolve(main(), "queueNames"), f"no Service Bus queue for {queue} in Bicep"
    scalers = [s for s in queue_scaled_objects().values() if s["spec"]["triggers"][0]["metadata"]["queueName"] == queue]
    assert scalers, f"no KEDA ScaledObject on {queue}"
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in scalers}
    assert targets <= set(deployments()), f"ScaledObject on {queue} scales a missing Deployment: {targets}"


def test_queue_names_follow_the_seed_settings() -> None:
    settings = Settings(LID_QUEUE_NAME="my-lid", WHISPER_QUEUE_NAME="my-whisper")
    assert step_queues(settings)["LID"] == "my-lid"
    assert step_queues(settings)["TRANSCRIBE"] == "my-whisper"
    assert all_queues(settings)[0] == settings.job_events_queue
    assert len(all_queues(settings)) == len(set(all_queues(settings)))


def test_offline_translation_of_audio_runs_where_the_whisper_model_is() -> None:
    offline = Settings()
    audio_job = JobState(workflow_type="full_pipeline", status="processing")
    text_job = JobState(workflow_type="translate_only", status="processing")
    french_target = JobState(workflow_type="full_pipeline", status="processing", target_language="fra")
    assert queue_for(offline, "TRANSLATE", audio_job) == offline.whisper_queue
    assert queue_for(offline, "TRANSLATE", text_job) == offline.azure_ai_queue
    assert queue_for(offline, "TRANSLATE", french_target) == offline.azure_ai_queue
    assert "TRANSLATE" in {spec.name for spec in steps_on_queue(offline, offline.whisper_queue)}

    online = offline.model_copy(update={"llm": offline.llm.model_copy(update={"backend": "openai"})})
    assert queue_for(online, "TRANSLATE", audio_job) == online.azure_ai_queue


def test_components_name_their_queues() -> None:
    settings = Settings()
    found = components(settings)
    assert found["whisper"] == (settings.whisper_queue,)
    assert found["azure-ai"] == (settings.azure_ai_queue,)
