"""One job's spans — the API request that starts it, each routing decision, each worker step — form
one trace, linked parent to child across the queue hops."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.core.config import Settings
from shared.domain.messages import JobEvent
from tests.support.pipeline import Stack, build_stack

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the process's tracer provider (set once per process, by OpenTelemetry's
    rule; later tests reuse it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def stack(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Stack]:
    built = build_stack(make_settings(database_url=database_url))
    yield built
    built.client.close()
    built.runtime.close()


def job_spans(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [span for span in spans if span.context is not None and span.context.trace_id == trace_id]


def test_one_job_is_one_trace_across_queue_hops(stack: Stack, exporter: InMemorySpanExporter) -> None:
    job_id = stack.submit("full_pipeline")
    exporter.clear()
    response = stack.client.post(f"/jobs/{job_id}/start")
    assert response.status_code == 202
    stack.drive(job_id)

    spans = exporter.get_finished_spans()
    # FastAPI's server span for the request is the root; the endpoint runs in a child of it.
    (start,) = [span for span in spans if span.name == "POST /jobs/{job_id}/start" and span.parent is None]
    assert start.context is not None
    mine = job_spans(spans, start.context.trace_id)
    by_id = {span.context.span_id: span for span in mine if span.context is not None}
    hops = sorted((span for span in mine if span.name.startswith(("route ", "step "))), key=_started)
    assert [span.name for span in hops] == [
        "route job_started",
        "step LID",
        "route step_completed",
        "step TRANSCRIBE",
        "route step_completed",
        "step TRANSLATE",
        "route step_completed",
        "step SUMMARIZE",
        "route step_completed",
    ]
    # Linked, not merely sharing an id: each hop's parent is the span that sent the message it handled,
    # and the first hop descends from the request that started the job.
    assert start in ancestors(hops[0], by_id)
    for parent, child in itertools.pairwise(hops):
        assert child.parent is not None
        assert by_id[child.parent.span_id] is parent, (child.name, parent.name)
    steps = [span for span in hops if span.name.startswith("step ")]
    assert {span.attributes["speechflow.job_id"] for span in steps if span.attributes} == {str(job_id)}
    assert all(span.attributes and span.attributes["speechflow.outcome"] == "completed" for span in steps)


def _started(span: ReadableSpan) -> int:
    return span.start_time or 0


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def test_a_caller_traceparent_is_continued(stack: Stack, exporter: InMemorySpanExporter) -> None:
    job_id = stack.submit("lid_only")
    exporter.clear()
    response = stack.client.post(f"/jobs/{job_id}/start", headers={"traceparent": CALLER_TRACEPARENT})
    assert response.status_code == 202
    stack.drive(job_id)
    mine = job_spans(exporter.get_finished_spans(), int(CALLER_TRACE, 16))
    names = {span.name for span in mine}
    assert {"POST /jobs/{job_id}/start", "route job_started", "step LID", "route step_completed"} <= names


def test_the_trace_context_rides_in_the_message(stack: Stack, exporter: InMemorySpanExporter) -> None:
    """What crosses the hop is the W3C traceparent, in the envelope and the application properties."""
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    received = stack.runtime.bus.receive(stack.settings.job_events_queue, max_wait=1.0)
    assert received is not None
    event = JobEvent.model_validate_json(received.body)
    assert event.traceparent is not None
    assert received.properties == {"traceparent": event.traceparent}
    version, trace_id, span_id, flags = event.traceparent.split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    assert int(flags, 16) & 1, "sampled"
    del exporter
