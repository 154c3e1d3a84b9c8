"""A long-lived worker is the step consumer of one registered component's queue (shared/steps): it runs
every step whose messages arrive there — its own, and those routed to it — with the registry's processors,
warmed up before it takes messages."""

from __future__ import annotations

from typing import Any, ClassVar

from gpu_worker.base_worker import BaseWorker
from shared.core.config import Settings
from shared.steps.context import StepContext
from shared.worker.step_handler import Processor, queue_processors, queue_warm_up


class RegistryWorker(BaseWorker):
    """Subclasses name one step type of their queue; the queue's other steps come with it."""

    step_types: ClassVar[tuple[str, ...]]

    def warm_up(self) -> None:
        queue_warm_up(self.settings, self.queue)()

    def processor_for(self, step_type: str) -> Processor | None:
        return queue_processors(self.settings, self.queue)(step_type)

    def process(self, step: StepContext) -> dict[str, Any]:
        processor = self.processor_for(step.step_type)
        assert processor is not None, f"{self.queue} does not run {step.step_type}"
        return processor(step)


def worker_for(settings: Settings, component: str) -> BaseWorker:
    """The worker of a registered component: the named classes where there is one, else a RegistryWorker
    over the component's steps."""
    from gpu_worker.lid import LidWorker
    from gpu_worker.whisper import WhisperWorker
    from shared.domain.registry import registry

    named: dict[str, type[BaseWorker]] = {"lid": LidWorker, "whisper": WhisperWorker}
    if component in named:
        return named[component](settings)
    steps = tuple(spec.name for spec in registry().values() if spec.component == component)
    if not steps:
        raise ValueError(f"no step of the registry runs on a {component!r} worker")
    worker_class = type(f"{component.title().replace('-', '')}Worker", (RegistryWorker,), {"step_types": steps})
    return worker_class(settings)
