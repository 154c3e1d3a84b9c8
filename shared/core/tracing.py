"""OpenTelemetry traces across queue hops.

A job's trace starts at the API request that starts it; the W3C `traceparent` of the current span rides
in every message the job causes (the envelope's `traceparent` field and the message's application
properties), and the router and each worker continue it, so one job is one trace.

Off by default at no cost: unless OTEL_EXPORTER_OTLP_ENDPOINT (or APPLICATIONINSIGHTS_CONNECTION_STRING,
exported by azure-monitor-opentelemetry-exporter, which requirements.txt installs) is set, no tracer
provider is installed, the API's tracer is a no-op and no `traceparent` is produced. A process that
installs its own provider (a test with an in-memory exporter) gets real spans through the same calls.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.core.config import Settings

log = logging.getLogger(__name__)

TRACER_NAME = "speechflow"
_propagator = TraceContextTextMapPropagator()
_configured = threading.Lock()
_provider_installed = False


def configure_tracing(settings: Settings, *, service_name: str) -> bool:
    """Install a tracer provider exporting to the configured backend, once per process. Returns
    whether one is installed; with no exporter configured nothing is installed."""
    global _provider_installed  # noqa: PLW0603 - the global tracer provider is per process by design
    endpoint = settings.otel_exporter_otlp_endpoint
    azure = settings.applicationinsights_connection_string
    use_azure = azure is not None and _installed("azure.monitor.opentelemetry.exporter")
    if azure is not None and not use_azure:
        log.warning(
            "APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry-exporter is not "
            "installed: no traces go to Application Insights",
            extra={"action": "tracing_exporter_missing"},
        )
    if not endpoint and not use_azure:
        return False
    with _configured:
        if _provider_installed:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint))))
        if use_azure and azure is not None:
            from azure.monitor.opentelemetry.exporter import (  # type: ignore[import-not-found,unused-ignore]
                AzureMonitorTraceExporter,
            )

            exporter = AzureMonitorTraceExporter(connection_string=azure.get_secret_value())
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider_installed = True
        log.info("tracing on", extra={"action": "tracing_configured", "service": service_name})
        return True


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector; its traces path is /v1/traces (OTLP/HTTP spec)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None when there is no recording trace."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def trace_properties(traceparent: str | None) -> dict[str, Any] | None:
    """Application properties that carry the trace context on a message."""
    return {"traceparent": traceparent} if traceparent else None


def traceparent_of(body_traceparent: str | None, properties: Mapping[str, Any] | None = None) -> str | None:
    """The trace context a received message carries: its envelope field, else its application properties."""
    if body_traceparent:
        return body_traceparent
    value = (properties or {}).get("traceparent")
    return value if isinstance(value, str) and value else None


@contextmanager
def span(
    name: str,
    *,
    traceparent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span that continues `traceparent` (a message's context) when given, else the current context.
    An exception escaping the block marks the span as an error."""
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    token = otel_context.attach(parent) if parent is not None else None
    try:
        clean = {key: value for key, value in (attributes or {}).items() if value is not None}
        with tracer().start_as_current_span(name, kind=kind, attributes=clean) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)


def mark_error(current: Span, description: str) -> None:
    current.set_status(Status(StatusCode.ERROR, description[:500]))


def current_ids() -> dict[str, str]:
    """trace_id and span_id of the current recording span, for log lines; empty when none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
