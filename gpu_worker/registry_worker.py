"""A long-lived worker is the step consumer of one registered component's queue (shared/pipeline): it runs
every step whose messages arrive there — its own, and those routed to it — with the registry's processors,
warmed up before it takes messages."""

from __future__ import annotations

from typing import Any, ClassVar

from gpu_worker.base_worker import BaseWorker
from shared.step_consumer import Processor, queue_processors, queue_warm_up
from shared.steps import StepContext


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
