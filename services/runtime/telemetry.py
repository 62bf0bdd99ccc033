"""OpenTelemetry set-up, identical in every process of the mesh.

Spans go to a JSON-lines file per process under `MEDPAY_TRACE_DIR` (so the demo and the tests can
read one settlement's trace across every process without a collector), and also to an OTLP
collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from services.runtime.masking import scrub

# Span attribute names, one place, so every service spells them the same.
ATTR_ORDER_ID = "medpay.order_id"
ATTR_REQUEST_ID = "medpay.request_id"
ATTR_SCENE = "medpay.scene"
ATTR_CHANNEL = "medpay.channel"
ATTR_INFNO = "medpay.nhsa.infno"
ATTR_MSGID = "medpay.nhsa.msgid"
ATTR_SETL_ID = "medpay.nhsa.setl_id"
ATTR_AMOUNT_FEN = "medpay.amount_fen"
ATTR_RUN_ID = "medpay.reconciliation.run_id"


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines to one file owned by this process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_to_dict(span), ensure_ascii=False) for span in spans]
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    attributes = {key: _plain(value) for key, value in (span.attributes or {}).items()}
    return {
        "trace_id": format(context.trace_id, "032x") if context else "",
        "span_id": format(context.span_id, "016x") if context else "",
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name", "unknown"),
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": attributes,
    }


# Most attribute values repeat span after span (methods, routes, hosts, statuses): each distinct
# string is scrubbed once (scrub is pure), not on every export.
_scrubbed = functools.lru_cache(maxsize=4096)(scrub)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _scrubbed(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def configure_tracing(service_name: str, trace_dir: Path) -> TracerProvider:
    """Install this process's tracer provider; call once, first thing in the composition root."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = JsonLinesSpanExporter(trace_dir / f"{service_name}.jsonl")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def instrument_httpx() -> None:
    """Outbound HTTP (channel SDKs, the insurer) continues the trace into the simulators."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
