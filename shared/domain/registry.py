"""The step registry: every step type declared once — its name, the queue and consumer that run it, its
processor, the typed result it writes and the inputs it reads. The router, the consumers, the API's
results, the local host and the dashboard all take what they need from here; the deployment tests check
that every registered queue has its k8s Deployment, its KEDA ScaledObject and its Bicep queue.

Adding a step (docs/ARCHITECTURE.md, "Adding a step"): a module in shared/steps that defines `SPEC`, a
node in a workflow of shared/domain/workflow.py, and its deployment entries. Modules are found by name, so
nothing else lists them (a step declared elsewhere, a plug-in or a test, is added with `register`); they
import their engines lazily, so that the API and the router can read the registry without loading a model.
The registry names the step modules' package but never imports it by a static import: the domain stays
below the step runtime (docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeVar

from shared.domain.results import ResultModel
from shared.domain.workflow import WORKFLOWS, JobState, RetryPolicy, split_part

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.steps.context import StepContext


Processor = Callable[["StepContext"], ResultModel]

E = TypeVar("E")


def per_process(build: Callable[[Settings], E]) -> Callable[[Settings], E]:
    """A step's engine, built by `build` once per process (and Settings object) on first use — never at
    import — and shared by every thread of the consumer."""
    built: dict[int, E] = {}
    lock = threading.Lock()

    def engine(settings: Settings) -> E:
        with lock:
            if id(settings) not in built:
                built[id(settings)] = build(settings)
            return built[id(settings)]

    return engine


@dataclass(frozen=True)
class StepSpec:
    name: str
    """The step type, as it appears in messages, the database and the API (`TRANSCRIBE`)."""
    title: str
    """What it does, for people (the dashboard, the API's documentation)."""
    queue: str
    """The queue its consumer takes it from (default name)."""
    component: str
    """The consumer that runs it: the local host component and the k8s Deployment (`whisper`)."""
    result: type[ResultModel]
    inputs: tuple[str, ...]
    """What it reads: `audio` (the upload), `transcript` (an earlier or uploaded transcript), or the
    result of a named step."""
    process: Processor
    queue_setting: str | None = None
    """A Settings field that renames the queue (the seed's `*_QUEUE_NAME` variables)."""
    route: Callable[[Settings, JobState], str | None] | None = None
    """Another step's queue to run this job's step on instead (where its inputs already are), or None."""
    warm_up: Callable[[Settings], None] | None = None
    """Load what the processor needs before the consumer takes messages."""
    warm_idle: Callable[[Settings], None] | None = None
    """Warm what a first job would otherwise pay for (compiles), while the consumer takes messages."""
    max_retries: int | None = None
    """How often a failed step is tried again (None: MAX_RETRIES)."""
    retry_backoff_seconds: float | None = None
    """The first retry's delay, doubled at each retry (None: RETRY_BACKOFF_SECONDS)."""

    def retry_policy(self, settings: Settings) -> RetryPolicy:
        return RetryPolicy(
            max_retries=settings.max_retries if self.max_retries is None else self.max_retries,
            backoff_seconds=(
                settings.retry_backoff_seconds if self.retry_backoff_seconds is None else self.retry_backoff_seconds
            ),
        )

    def queue_name(self, settings: Settings) -> str:
        if self.queue_setting is not None:
            return str(getattr(settings, self.queue_setting))
        return self.queue


STEP_PACKAGE = "shared.steps"
"""Where the product's step modules are."""

_added: dict[str, StepSpec] = {}


def register(spec: StepSpec) -> StepSpec:
    """Add a step declared outside shared/steps to the registry (every process that routes or runs it
    must register it, as it imports its module)."""
    _added[spec.name] = spec
    registry.cache_clear()
    if registry()[spec.name] is not spec:
        raise ValueError(f"step type {spec.name} is declared twice")
    return spec


def unregister(name: str) -> None:
    """Remove a step added with `register`."""
    _added.pop(name, None)
    registry.cache_clear()


@cache
def registry() -> Mapping[str, StepSpec]:
    """Every step type, from the modules of this package that define `SPEC`."""
    specs: dict[str, StepSpec] = {}
    package = importlib.import_module(STEP_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        spec = getattr(importlib.import_module(f"{STEP_PACKAGE}.{module.name}"), "SPEC", None)
        if isinstance(spec, StepSpec):
            if spec.name in specs:
                raise ValueError(f"step type {spec.name} is declared twice")
            specs[spec.name] = spec
    for spec in _added.values():
        if spec.name in specs:
            raise ValueError(f"step type {spec.name} is declared twice")
        specs[spec.name] = spec
    order = _reading_order()
    return dict(sorted(specs.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _reading_order() -> dict[str, int]:
    """How people read the steps (the dashboard's order): as the workflows list them, the longest first;
    a step no workflow names comes last."""
    order: dict[str, int] = {}
    for workflow in sorted(WORKFLOWS.values(), key=lambda workflow: -len(workflow.steps)):
        for step in workflow.steps:
            order.setdefault(step, len(order))
    return order


def step_types() -> tuple[str, ...]:
    return tuple(registry())


def spec_of(step_type: str) -> StepSpec:
    """The spec of a step type, or of the step a part (`TRANSCRIBE.3`) belongs to. KeyError if unknown."""
    return registry()[split_part(step_type)[0]]


def known(step_type: str) -> bool:
    return split_part(step_type)[0] in registry()


def queue_for(settings: Settings, step_type: str, job: JobState) -> str:
    """The queue a step of this job is sent to."""
    spec = spec_of(step_type)
    if spec.route is not None:
        other = spec.route(settings, job)
        if other is not None:
            return spec_of(other).queue_name(settings)
    return spec.queue_name(settings)


def steps_on_queue(settings: Settings, queue: str) -> tuple[StepSpec, ...]:
    """The steps whose messages can arrive on `queue` (their own, or routed there)."""
    found = [spec for spec in registry().values() if spec.queue_name(settings) == queue]
    names = {spec.name for spec in found}
    for spec in registry().values():
        if spec.route is not None and spec.name not in names and _may_route_to(spec, settings, queue):
            found.append(spec)
    return tuple(found)


def _may_route_to(spec: StepSpec, settings: Settings, queue: str) -> bool:
    assert spec.route is not None
    probe = JobState(workflow_type="full_pipeline", status="processing")
    other = spec.route(settings, probe)
    return other is not None and spec_of(other).queue_name(settings) == queue


def step_queues(settings: Settings) -> dict[str, str]:
    """Step type → the queue its consumer takes it from (before any routing)."""
    return {name: spec.queue_name(settings) for name, spec in registry().items()}


def all_queues(settings: Settings) -> list[str]:
    """job-events, then every step queue once, in the registry's order: the queues the bus declares."""
    return list(dict.fromkeys([settings.job_events_queue, *step_queues(settings).values()]))


def components(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Consumer component → the queues it consumes."""
    found: dict[str, list[str]] = {}
    for spec in registry().values():
        queue = spec.queue_name(settings)
        names = found.setdefault(spec.component, [])
        if queue not in names:
            names.append(queue)
    return {name: tuple(queue_names) for name, queue_names in found.items()}


def retry_policy_for(settings: Settings) -> Callable[[str], RetryPolicy | None]:
    """Each registered step's retry policy (its spec's, defaulting to the settings'); None for a step
    type the registry does not know."""

    def policy(step_type: str) -> RetryPolicy | None:
        return registry()[step_type].retry_policy(settings) if step_type in registry() else None

    return policy


def component_of_queue(settings: Settings, queue: str) -> str:
    """The component whose consumer takes `queue`."""
    return next(spec.component for spec in registry().values() if spec.queue_name(settings) == queue)


FUNCTION_COMPONENTS = frozenset({"azure-ai"})
"""Components that are Service Bus-triggered functions of the Functions app on Azure (functions/); every
other component is a long-lived worker with probes (gpu_worker/)."""


def worker_components(settings: Settings) -> tuple[str, ...]:
    """The long-lived workers, in the registry's order."""
    return tuple(name for name in components(settings) if name not in FUNCTION_COMPONENTS)
