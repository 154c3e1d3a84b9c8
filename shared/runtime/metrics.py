"""Prometheus metrics, all named speechflow_*.

Two kinds live here. Counters and histograms count what this process did (steps run, their duration,
retries, dead letters, audio and model seconds); Prometheus sums them over the replicas. Jobs by status
and queue depths are the state of the whole system, read from the database and the bus when /metrics is
scraped (`StateCollector`), cached for a few seconds so that frequent scrapes cost one query.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.bus import QueueDepth
from shared.domain.usage import step_usage

log = logging.getLogger(__name__)

# Seconds; from a sub-second LID window to a multi-hour transcription.
STEP_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))

STEPS = Counter(
    "speechflow_steps",
    "Step runs by step type and outcome (completed, failed, settled, busy, lost).",
    ["step_type", "outcome"],
)
STEP_DURATION = Histogram(
    "speechflow_step_duration_seconds",
    "Wall time of a step run, from claim to completion or failure.",
    ["step_type", "outcome"],
    buckets=STEP_DURATION_BUCKETS,
)
STEP_RETRIES = Counter("speechflow_step_retries", "Step attempts that retried a failed one.", ["step_type"])
DEAD_LETTERS = Counter(
    "speechflow_dead_letters", "Messages this process moved to a dead-letter queue.", ["queue", "reason"]
)
AUDIO_SECONDS = Counter(
    "speechflow_audio_seconds_processed",
    "Audio seconds in completed steps.",
    ["step_type"],
)
MODEL_SECONDS = Counter(
    "speechflow_model_seconds", "Seconds spent inside a model (inference) by completed steps.", ["step_type"]
)
ROUTED_EVENTS = Counter("speechflow_routed_events", "Job events routed, by event kind.", ["kind"])
JOBS_FINISHED = Counter("speechflow_jobs_finished", "Jobs that reached a terminal status.", ["status"])
COMPUTE_SECONDS = Counter(
    "speechflow_compute_seconds",
    "Compute seconds of completed steps by where they ran (cpu, gpu, remote text model); shared/domain/usage.py.",
    ["step_type", "device"],
)
LLM_TOKENS = Counter("speechflow_llm_tokens", "Text model tokens of completed steps.", ["direction"])
LIVE_SESSIONS = Gauge("speechflow_live_sessions", "Live transcription sessions open on this worker.")
LIVE_TURN_LATENCY = Histogram(
    "speechflow_live_turn_latency_seconds",
    "From a live turn's commit (the end of its speech, or the client's commit) to its completed transcript.",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, float("inf")),
)
LIVE_AUDIO_SECONDS = Counter("speechflow_live_audio_seconds", "Audio seconds received by live sessions.")
LIVE_PARTIALS_SKIPPED = Counter(
    "speechflow_live_partials_skipped", "Partial decodes left out under load (finals never are)."
)


def record_step(
    step_type: str,
    outcome: str,
    *,
    seconds: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Count one step run, and its duration where it ran (a refused claim did not); a completed run adds
    the audio and model seconds its details record."""
    STEPS.labels(step_type=step_type, outcome=outcome).inc()
    if seconds is not None:
        STEP_DURATION.labels(step_type=step_type, outcome=outcome).observe(seconds)
    if outcome != "completed" or not details:
        return
    for key, counter in (("audio_duration_seconds", AUDIO_SECONDS), ("model_seconds", MODEL_SECONDS)):
        value = details.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            counter.labels(step_type=step_type).inc(float(value))
    used = step_usage(step_type, details)
    if used is not None:
        COMPUTE_SECONDS.labels(step_type=step_type, device=used.device).inc(used.compute_seconds)
        LLM_TOKENS.labels(direction="input").inc(used.input_tokens)
        LLM_TOKENS.labels(direction="output").inc(used.output_tokens)


def record_retry(step_type: str) -> None:
    STEP_RETRIES.labels(step_type=step_type).inc()


def record_dead_letter(queue: str, reason: str) -> None:
    DEAD_LETTERS.labels(queue=queue, reason=reason).inc()


class StateCollector(Collector):
    """Jobs by status and queue depth per queue (active, scheduled, dead-lettered), read at scrape time.

    `job_counts` and `queue_depths` are callables so that the collector knows nothing of sessions or
    adapters; a failing source is logged and left out of the scrape rather than failing it."""

    def __init__(
        self,
        *,
        job_counts: Callable[[], Mapping[str, int]],
        queue_depths: Callable[[], Mapping[str, QueueDepth]],
        max_age_seconds: float = 2.0,
    ) -> None:
        self._job_counts = job_counts
        self._queue_depths = queue_depths
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        # Registering must not touch the database: describe the families without reading them.
        return [
            GaugeMetricFamily("speechflow_jobs", "Jobs by status.", labels=["status"]),
            GaugeMetricFamily(
                "speechflow_queue_messages",
                "Queue messages by state.",
                labels=["queue", "state"],
            ),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._max_age:
                self._cached = (now, self._read())
            yield from self._cached[1]

    def _read(self) -> list[GaugeMetricFamily]:
        families: list[GaugeMetricFamily] = []
        try:
            jobs = GaugeMetricFamily("speechflow_jobs", "Jobs by status.", labels=["status"])
            for status, count in sorted(self._job_counts().items()):
                jobs.add_metric([status], count)
            families.append(jobs)
        except Exception as error:
            log.warning("job counts unavailable: %s", error, extra={"action": "metrics_jobs_failed"})
        try:
            queues = GaugeMetricFamily(
                "speechflow_queue_messages", "Queue messages by state.", labels=["queue", "state"]
            )
            for queue, depth in sorted(self._queue_depths().items()):
                queues.add_metric([queue, "active"], depth.active)
                queues.add_metric([queue, "scheduled"], depth.scheduled)
                queues.add_metric([queue, "dead_letter"], depth.dead_letter)
            families.append(queues)
        except Exception as error:
            log.warning("queue depths unavailable: %s", error, extra={"action": "metrics_queues_failed"})
        return families


# Keyed by the registry itself, held weakly: an id() would outlive a collected registry and be handed
# to the next one, which would then "replace" a collector it never had.
_registered: weakref.WeakKeyDictionary[CollectorRegistry, StateCollector] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register_state_collector(collector: StateCollector, *, registry: CollectorRegistry = REGISTRY) -> None:
    """Register the process's one state collector in `registry`, replacing an earlier one (an app
    factory called twice, in tests, must not register the same metric names twice)."""
    with _registered_lock:
        previous = _registered.pop(registry, None)
        if previous is not None:
            registry.unregister(previous)
        registry.register(collector)
        _registered[registry] = collector


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The body and content type of a /metrics response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
