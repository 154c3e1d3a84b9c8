"""speechflow_* metrics: what a step run records, and the state collector's reads, cache and failures."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.bus import QueueDepth
from shared.core.logs import JsonFormatter, log_context
from shared.core.tracing import current_traceparent, span, traceparent_of
from shared.runtime import metrics


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_a_completed_step_records_duration_audio_and_model_seconds() -> None:
    labels = {"step_type": "TRANSCRIBE", "outcome": "completed"}
    before = (
        sample("speechflow_steps_total", **labels),
        sample("speechflow_step_duration_seconds_count", **labels),
        sample("speechflow_audio_seconds_processed_total", step_type="TRANSCRIBE"),
        sample("speechflow_model_seconds_total", step_type="TRANSCRIBE"),
    )
    metrics.record_step(
        "TRANSCRIBE", "completed", seconds=4.0, details={"audio_duration_seconds": 60.0, "model_seconds": 3.5}
    )
    after = (
        sample("speechflow_steps_total", **labels),
        sample("speechflow_step_duration_seconds_count", **labels),
        sample("speechflow_audio_seconds_processed_total", step_type="TRANSCRIBE"),
        sample("speechflow_model_seconds_total", step_type="TRANSCRIBE"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == pytest.approx([1, 1, 60.0, 3.5])


def test_a_failed_or_refused_step_adds_no_audio_and_a_refusal_no_duration() -> None:
    audio = sample("speechflow_audio_seconds_processed_total", step_type="LID")
    refused = sample("speechflow_step_duration_seconds_count", step_type="LID", outcome="settled")
    metrics.record_step("LID", "failed", seconds=1.0, details={"audio_duration_seconds": 30.0})
    metrics.record_step("LID", "settled")
    metrics.record_step("LID", "completed", seconds=1.0, details={"audio_duration_seconds": True})
    assert sample("speechflow_audio_seconds_processed_total", step_type="LID") == audio
    assert sample("speechflow_step_duration_seconds_count", step_type="LID", outcome="settled") == refused
    assert sample("speechflow_steps_total", step_type="LID", outcome="settled") >= 1


def read(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for item in family.samples:
            found[(item.name, tuple(sorted(item.labels.items())))] = item.value
    return found


def test_state_collector_exports_jobs_by_status_and_queue_depths() -> None:
    registry = CollectorRegistry()
    collector = metrics.StateCollector(
        job_counts=lambda: {"queued": 2, "failed": 1},
        queue_depths=lambda: {"lid-jobs": QueueDepth(active=3, scheduled=1, dead_letter=4)},
    )
    metrics.register_state_collector(collector, registry=registry)
    found = read(registry)
    assert found[("speechflow_jobs", (("status", "queued"),))] == 2
    assert found[("speechflow_jobs", (("status", "failed"),))] == 1
    assert found[("speechflow_queue_messages", (("queue", "lid-jobs"), ("state", "active")))] == 3
    assert found[("speechflow_queue_messages", (("queue", "lid-jobs"), ("state", "scheduled")))] == 1
    assert found[("speechflow_queue_messages", (("queue", "lid-jobs"), ("state", "dead_letter")))] == 4


def test_state_collector_caches_reads_and_survives_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    reads = {"jobs": 0}

    def job_counts() -> dict[str, int]:
        reads["jobs"] += 1
        return {"completed": reads["jobs"]}

    def unreachable() -> dict[str, QueueDepth]:
        raise ConnectionError("bus down")

    registry = CollectorRegistry()
    metrics.register_state_collector(
        metrics.StateCollector(job_counts=job_counts, queue_depths=unreachable, max_age_seconds=60),
        registry=registry,
    )
    first, second = read(registry), read(registry)
    assert reads["jobs"] == 1, "a second scrape within max_age is served from the cache"
    assert first == second
    assert first[("speechflow_jobs", (("status", "completed"),))] == 1
    assert not any(name == "speechflow_queue_messages" for name, _ in first)
    assert "queue depths unavailable" in caplog.text


def queued(count: int) -> Callable[[], dict[str, int]]:
    return lambda: {"queued": count}


def test_registering_again_replaces_the_previous_collector() -> None:
    registry = CollectorRegistry()
    for count in (1, 5):
        metrics.register_state_collector(
            metrics.StateCollector(job_counts=queued(count), queue_depths=dict),
            registry=registry,
        )
    assert read(registry)[("speechflow_jobs", (("status", "queued"),))] == 5


def test_a_registry_collected_does_not_hand_its_collector_to_the_next_one() -> None:
    """CPython gives a collected registry's id to the next object of its size: the bookkeeping must
    not take the new registry for the old one (it once unregistered a collector the new one never had)."""
    old = CollectorRegistry()
    metrics.register_state_collector(metrics.StateCollector(job_counts=queued(1), queue_depths=dict), registry=old)
    old_id = id(old)
    del old
    gc.collect()
    fresh = [CollectorRegistry() for _ in range(200)]
    reused = [registry for registry in fresh if id(registry) == old_id]
    target = reused[0] if reused else fresh[0]

    metrics.register_state_collector(metrics.StateCollector(job_counts=queued(3), queue_depths=dict), registry=target)

    assert read(target)[("speechflow_jobs", (("status", "queued"),))] == 3


def test_a_message_traceparent_is_continued_and_none_is_made_without_a_provider() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with span("continued", traceparent=incoming):
        continued = current_traceparent()
    assert continued is not None
    assert continued.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No provider installed (tracing off): nothing is recorded and no context is invented.
        with span("anything"):
            assert current_traceparent() is None
    assert traceparent_of(None, {"traceparent": incoming}) == incoming
    assert traceparent_of("00-a-b-01", {"traceparent": incoming}) == "00-a-b-01"
    assert traceparent_of(None, {}) is None


def test_log_lines_carry_the_context_keys_unless_they_set_their_own() -> None:
    formatter = JsonFormatter()

    def line(**extra: object) -> str:
        record = logging.LogRecord("speechflow.test", logging.INFO, __file__, 1, "hello", (), None)
        record.__dict__.update(extra)
        return formatter.format(record)

    with log_context(job_id="j-1", step_type="LID", attempt=2):
        inside = line(action="step_started")
        overridden = line(action="route", step_type="TRANSCRIBE")
    outside = line(action="idle")
    assert '"job_id": "j-1"' in inside and '"step_type": "LID"' in inside and '"attempt": 2' in inside
    assert '"action": "step_started"' in inside
    assert '"step_type": "TRANSCRIBE"' in overridden
    assert "job_id" not in outside
