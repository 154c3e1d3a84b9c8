"""The workflow state machine as one pure function: (workflow, job, steps, event) → decision.

No I/O here. A workflow is a dependency graph of steps: a step becomes ready when every step it comes
after has settled (completed, skipped, or failed for good while optional); all ready steps are
dispatched together and run side by side; a step may fan out into parts (`TRANSCRIBE.1` …
`TRANSCRIBE.n`) that are joined by the step itself once every part has completed.

The router, the API (cancel) and the dead-letter consumer load the state, ask `next_decision`, and
apply what it says in one transaction (shared/jobs/lifecycle.py). Decisions are computed from the state,
not from the event alone, so a redelivered or stale event yields the same (or an empty) decision:
at-least-once delivery, exactly-once effects (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from shared.domain.languages import is_english
from shared.domain.status import CANCELLABLE_STATUSES, TERMINAL_STATUSES

WorkflowType = Literal["full_pipeline", "transcribe_only", "lid_only", "translate_only", "summarize_only"]
WORKFLOW_TYPES: tuple[str, ...] = get_args(WorkflowType)

# Workflows whose input is audio (uploaded through upload_url); the others take a transcript.
AUDIO_WORKFLOWS = frozenset({"full_pipeline", "transcribe_only", "lid_only"})
NEEDS_SOURCE_LANGUAGE = frozenset({"transcribe_only", "translate_only", "summarize_only"})
INTERNAL_WORKFLOWS = frozenset({"enroll_speaker"})
"""Workflows the service runs for itself, never asked for on POST /jobs nor shown by /jobs: enrolling a
voice of the voice library (POST /speakers) on the diarize worker, where the speaker model lives."""


@dataclass(frozen=True)
class JobState:
    workflow_type: str
    status: str
    source_language: str | None = None
    detected_language: str | None = None
    target_language: str | None = "en"
    audio_duration_seconds: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    """The job's options (speaker_labels, channels, …) as the client gave them."""
    chunk_seconds: float | None = None
    """Target length of a transcription chunk (TRANSCRIBE_CHUNK_SECONDS); None: never cut."""


@dataclass(frozen=True)
class StepState:
    step_type: str
    status: str
    retry_count: int = 0
    retryable: bool = True
    error_message: str | None = None


EventKind = Literal[
    "job_started", "step_completed", "step_failed", "step_dead_lettered", "event_dead_lettered", "cancel_requested"
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    step_type: str | None = None
    attempt: int = 0
    reason: str | None = None
    """Why (a dead-lettered event's reason)."""


@dataclass(frozen=True)
class Node:
    """One step of a workflow and the steps it waits for."""

    step: str
    after: tuple[str, ...] = ()
    optional: bool = False
    """Its final failure leaves the job partial_complete instead of failed."""
    skip_when: Callable[[JobState], str | None] | None = None
    """Why this job needs no such step (recorded as a skipped step), or None."""
    include_when: Callable[[JobState], bool] | None = None
    """Whether this job has the step at all (an option asked for it); a step left out counts as settled."""
    parts: Callable[[JobState], int] | None = None
    """How many parts to fan the step out into for this job (1: run it whole)."""


@dataclass(frozen=True)
class Workflow:
    nodes: tuple[Node, ...]
    """In an order where every step comes after the steps it waits for."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            missing = [name for name in node.after if name not in seen]
            if missing:
                raise ValueError(f"{node.step} comes after {missing}, which are not before it")
            seen.add(node.step)

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(node.step for node in self.nodes)

    def node(self, step: str) -> Node | None:
        return next((node for node in self.nodes if node.step == step), None)


def chain(*nodes: Node) -> Workflow:
    """A workflow whose steps run one after the other, each after the one before."""
    linked = [
        Node(
            node.step,
            after=node.after or ((nodes[index - 1].step,) if index else ()),
            optional=node.optional,
            skip_when=node.skip_when,
            include_when=node.include_when,
            parts=node.parts,
        )
        for index, node in enumerate(nodes)
    ]
    return Workflow(tuple(linked))


def translation_skip_reason(job: JobState) -> str | None:
    """Why full_pipeline needs no TRANSLATE step for this job, or None if it does."""
    if job.options.get("code_switching"):
        # The file's main language says nothing of the others: the step translates what is not in the target.
        return None
    language = (job.detected_language or job.source_language or "").lower()
    target = (job.target_language or "en").lower()
    if not language:
        return None
    if is_english(language) and is_english(target):
        return "source language is English"
    if language == target:
        return f"source language is already the target language ({target})"
    return None


FETCH = Node("FETCH", include_when=lambda job: bool(job.options.get("audio_url")))
"""The audio of a job created with audio_url instead of an upload; a job with an upload has no FETCH step,
and the step after it starts at once (a step left out counts as settled)."""

MAX_PARTS = 64
"""No step fans out wider than this: past about 64 × TRANSCRIBE_CHUNK_SECONDS (2.7 hours at the default
150 s) a recording's chunks grow longer instead of more numerous."""


def split_channels(job: JobState) -> bool:
    return job.options.get("channels") == "split"


def wants_diarization(job: JobState) -> bool:
    """Speakers asked for, and not already given by the channels (split: each channel is a speaker)."""
    asked = bool(job.options.get("speaker_labels")) or job.options.get("speakers_expected") is not None
    return asked and not split_channels(job)


def chunk_count(duration: float | None, chunk_seconds: float | None) -> int:
    """How many chunks a recording is transcribed in: one unless it is longer than twice the target,
    else about one per target length (shared/steps/transcribe.py places the cuts in pauses)."""
    if not duration or not chunk_seconds or duration <= 2 * chunk_seconds:
        return 1
    return min(MAX_PARTS, max(2, round(duration / chunk_seconds)))


def transcription_parts(job: JobState) -> int:
    """One part per channel when the channels are split, else one per chunk of a long recording."""
    if split_channels(job):
        channels = job.options.get("channel_count")
        return min(MAX_PARTS, channels) if isinstance(channels, int) and channels > 1 else 1
    return chunk_count(job.audio_duration_seconds, job.chunk_seconds)


def wants_redacted_audio(job: JobState) -> bool:
    return bool(job.options.get("redact_pii_audio"))


def _speech(first: tuple[str, ...]) -> tuple[Node, ...]:
    """TRANSCRIBE (fanned out over the chunks of a long recording, or over split channels) and, when
    speakers are asked for, DIARIZE beside it; when redacted audio is asked for, REDACT_AUDIO after the
    (masked) transcript. Its failure leaves the transcript intact: the job ends partial_complete."""
    return (
        Node("TRANSCRIBE", after=first, parts=transcription_parts),
        Node("DIARIZE", after=first, optional=True, include_when=wants_diarization),
        Node("REDACT_AUDIO", after=("TRANSCRIBE",), optional=True, include_when=wants_redacted_audio),
    )


WORKFLOWS: Mapping[str, Workflow] = {
    "full_pipeline": Workflow(
        (
            FETCH,
            Node("LID", after=("FETCH",)),
            *_speech(("LID",)),
            # After DIARIZE too: the translation keeps the speaker of each segment it translates.
            Node("TRANSLATE", after=("TRANSCRIBE", "DIARIZE"), optional=True, skip_when=translation_skip_reason),
            Node("SUMMARIZE", after=("TRANSLATE",), optional=True),
        )
    ),
    "transcribe_only": Workflow((FETCH, *_speech(("FETCH",)))),
    "lid_only": chain(FETCH, Node("LID", after=("FETCH",))),
    "translate_only": chain(Node("TRANSLATE")),
    "summarize_only": chain(Node("SUMMARIZE")),
    "enroll_speaker": chain(Node("ENROLL")),
}


def part_name(step: str, part: int) -> str:
    """The step type of part `part` (1-based) of a fanned-out step."""
    return f"{step}.{part}"


def split_part(step_type: str) -> tuple[str, int | None]:
    """`TRANSCRIBE.3` → ("TRANSCRIBE", 3); a whole step → (step_type, None)."""
    base, dot, number = step_type.rpartition(".")
    if dot and number.isdigit():
        return base, int(number)
    return step_type, None


@dataclass(frozen=True)
class Dispatch:
    """Send this step to its worker queue: a new step (attempt 0) or a retry of a failed one."""

    step_type: str
    attempt: int
    delay_seconds: float = 0.0
    parts: int | None = None
    """For a part of a fanned-out step: how many parts there are."""

    @property
    def is_retry(self) -> bool:
        return self.attempt > 0


@dataclass(frozen=True)
class Skip:
    """Record the step as done without running it, and why."""

    step_type: str
    reason: str


@dataclass(frozen=True)
class Decision:
    dispatches: tuple[Dispatch, ...] = ()
    skips: tuple[Skip, ...] = ()
    job_status: str | None = None
    """The job's new status, or None to leave it."""
    error_message: str | None = None
    dead_lettered_step: str | None = None
    """A step whose message was dead-lettered: record it failed, no retry."""
    notify: bool = False
    """Tell the client (webhook) about the job's terminal status."""
    reason: str = ""
    failed_steps: tuple[str, ...] = ()
    refused: bool = False
    """The event asked for something the job's state does not allow (cancel after the end)."""

    @property
    def dispatch(self) -> Dispatch | None:
        """The first dispatch (a chain dispatches one step at a time)."""
        return self.dispatches[0] if self.dispatches else None

    @property
    def is_noop(self) -> bool:
        return not self.dispatches and not self.skips and self.job_status is None


def retry_delay(retry_count: int, *, base_seconds: float) -> float:
    """Exponential backoff before retry number retry_count + 1."""
    return float(base_seconds * (2**retry_count))


def can_cancel(status: str) -> bool:
    return status in CANCELLABLE_STATUSES


Settled = Literal["done", "failed_optional", "waiting", "blocked"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed step is tried again, and the first delay (doubled at each retry)."""

    max_retries: int
    backoff_seconds: float


@dataclass
class _Walk:
    """What one pass over the graph found."""

    job: JobState
    states: dict[str, StepState]
    max_retries: int
    backoff_seconds: float
    retry_policy: Callable[[str], RetryPolicy | None] | None = None
    dispatches: list[Dispatch] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    failed_optional: list[str] = field(default_factory=list)
    failed_required: str | None = None

    def unit(self, step_type: str, *, optional: bool, parts: int | None = None) -> Settled:
        """Where one runnable step (a whole step, a part, or a join) stands; dispatches it if it is due."""
        state = self.states.get(step_type)
        if state is None:
            self.dispatches.append(Dispatch(step_type, attempt=0, parts=parts))
            return "waiting"
        if state.status in ("pending", "processing"):
            return "waiting"
        if state.status == "completed":
            return "done"
        policy = self.retry_policy(split_part(step_type)[0]) if self.retry_policy is not None else None
        policy = policy or RetryPolicy(self.max_retries, self.backoff_seconds)
        if state.retryable and state.retry_count < policy.max_retries:
            delay = retry_delay(state.retry_count, base_seconds=policy.backoff_seconds)
            self.dispatches.append(Dispatch(step_type, attempt=state.retry_count + 1, delay_seconds=delay, parts=parts))
            return "waiting"
        if optional:
            self.failed_optional.append(step_type)
            return "failed_optional"
        self.failed_required = self.failed_required or step_type
        return "blocked"

    def node(self, node: Node) -> Settled:
        if node.step not in self.states and node.skip_when is not None:
            reason = node.skip_when(self.job)
            if reason is not None:
                self.skips.append(Skip(node.step, reason))
                return "done"
        count = self._part_count(node)
        if count <= 1:
            return self.unit(node.step, optional=node.optional)
        settled = [self.unit(part_name(node.step, n), optional=node.optional, parts=count) for n in range(1, count + 1)]
        if "failed_optional" in settled:
            return "failed_optional"
        if any(state != "done" for state in settled):
            return "blocked" if "blocked" in settled else "waiting"
        return self.unit(node.step, optional=node.optional, parts=count)

    def _part_count(self, node: Node) -> int:
        """Parts already dispatched decide (the job's facts may have changed since); else the node's rule."""
        existing = [name for name in self.states if split_part(name)[0] == node.step and split_part(name)[1]]
        if existing:
            return len(existing)
        return max(1, node.parts(self.job)) if node.parts is not None else 1


def next_decision(
    *,
    job: JobState,
    steps: Mapping[str, StepState],
    event: Event,
    max_retries: int,
    backoff_seconds: float,
    workflows: Mapping[str, Workflow] = WORKFLOWS,
    retry_policy: Callable[[str], RetryPolicy | None] | None = None,
) -> Decision:
    """What happens next to this job, given everything known about it. `retry_policy` gives a step's own
    retries (its spec's), where it has one; `max_retries` and `backoff_seconds` are the default."""
    workflow = workflows.get(job.workflow_type)
    if workflow is None:
        return Decision(
            job_status="failed",
            error_message=f"unknown workflow_type {job.workflow_type!r}",
            notify=True,
            reason="unknown workflow",
        )
    if event.kind == "cancel_requested":
        if job.status not in CANCELLABLE_STATUSES:
            return Decision(refused=True, reason=f"job is {job.status}; it has already ended")
        return Decision(job_status="cancelled", notify=True, reason="cancelled by the client")
    if job.status in TERMINAL_STATUSES:
        return Decision(reason=f"job already {job.status}")
    if event.kind == "event_dead_lettered":
        # The router itself could not handle one of this job's events: nothing will move it on.
        return Decision(
            job_status="failed",
            error_message=f"the router could not handle an event: {event.reason or 'no reason given'}",
            notify=True,
            reason="job event dead-lettered",
        )
    if job.status == "pending_upload":
        return Decision(reason="job not started")
    if event.step_type is not None and split_part(event.step_type)[0] not in workflow.steps:
        return Decision(reason=f"{event.step_type} is not a step of {job.workflow_type}")

    states = dict(steps)
    dead_lettered: str | None = None
    if event.kind == "step_dead_lettered" and event.step_type in states:
        current = states[event.step_type]
        if current.status != "completed" and current.retry_count == event.attempt:
            dead_lettered = event.step_type
            states[dead_lettered] = StepState(
                step_type=dead_lettered,
                status="failed",
                retry_count=current.retry_count,
                retryable=False,
                error_message=current.error_message or "message dead-lettered after repeated delivery failures",
            )

    walk = _Walk(
        job=job, states=states, max_retries=max_retries, backoff_seconds=backoff_seconds, retry_policy=retry_policy
    )
    settled: dict[str, Settled] = {}
    for node in workflow.nodes:
        if node.include_when is not None and not node.include_when(job):
            settled[node.step] = "done"
            continue
        if any(settled[before] not in ("done", "failed_optional") for before in node.after):
            settled[node.step] = "blocked"
            continue
        settled[node.step] = walk.node(node)

    starting = job.status == "queued"
    if walk.failed_required is not None:
        failed = walk.failed_required
        return Decision(
            job_status="failed",
            error_message=f"{failed} failed: {states[failed].error_message or 'unknown error'}",
            dead_lettered_step=dead_lettered,
            notify=True,
            failed_steps=(*walk.failed_optional, failed),
            reason=f"{failed} failed for good",
        )
    if walk.dispatches or any(state == "waiting" for state in settled.values()):
        names = ", ".join(dispatch.step_type for dispatch in walk.dispatches)
        return Decision(
            dispatches=tuple(walk.dispatches),
            skips=tuple(walk.skips),
            job_status="processing" if starting else None,
            dead_lettered_step=dead_lettered,
            reason=f"dispatch {names}" if names else "waiting for running steps",
        )
    if walk.failed_optional:
        return Decision(
            skips=tuple(walk.skips),
            job_status="partial_complete",
            error_message="; ".join(
                f"{name} failed: {states[name].error_message or 'unknown error'}" for name in walk.failed_optional
            ),
            dead_lettered_step=dead_lettered,
            notify=True,
            failed_steps=tuple(walk.failed_optional),
            reason="finished with failed optional steps",
        )
    return Decision(
        skips=tuple(walk.skips),
        job_status="completed",
        dead_lettered_step=dead_lettered,
        notify=True,
        reason="all steps completed",
    )
