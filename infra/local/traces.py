"""One trace across the mesh, read back from the JSON-lines span files every process writes
(`services.runtime.telemetry`: one `<service>.jsonl` per process under MEDPAY_TRACE_DIR).

Pure functions over plain data: load the spans, keep one trace, build its tree, render it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / _NS_PER_MS


@dataclass(slots=True)
class SpanNode:
    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)


def parse_span(line: str) -> SpanRecord | None:
    """One JSON line as a span; None for a blank, torn (still being written) or foreign line."""
    try:
        raw = json.loads(line)
        return SpanRecord(
            trace_id=str(raw["trace_id"]),
            span_id=str(raw["span_id"]),
            parent_id=raw.get("parent_id") or None,
            name=str(raw["name"]),
            service=str(raw.get("service", "unknown")),
            kind=str(raw.get("kind", "")),
            start_ns=int(raw["start_ns"]),
            end_ns=int(raw["end_ns"]),
            status=str(raw.get("status", "UNSET")),
            attributes=dict(raw.get("attributes") or {}),
        )
    except (ValueError, KeyError, TypeError):
        return None


def load_spans(directory: Path) -> list[SpanRecord]:
    """Every readable span of every `*.jsonl` file in `directory` (none if it does not exist)."""
    spans: list[SpanRecord] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            spans += [span for span in map(parse_span, lines) if span is not None]
    return spans


def spans_of_trace(spans: Iterable[SpanRecord], trace_id: str) -> list[SpanRecord]:
    """The spans of one trace, each span once, in start order."""
    unique = {span.span_id: span for span in spans if span.trace_id == trace_id}
    return sorted(unique.values(), key=lambda span: (span.start_ns, span.end_ns))


def without_asgi_messages(spans: Iterable[SpanRecord]) -> list[SpanRecord]:
    """Drop the ASGI instrumentation's per-message leaf spans ("POST /x http receive" / "http
    send"): real, but noise in a settlement's tree."""
    return [span for span in spans if not span.name.endswith((" http receive", " http send"))]


def build_tree(spans: Iterable[SpanRecord]) -> list[SpanNode]:
    """Parent/child tree of one trace's spans. A span whose parent was not recorded (a process
    that did not flush, or a broken propagation) becomes a root of its own, so nothing is lost."""
    ordered = sorted(spans, key=lambda span: (span.start_ns, span.end_ns))
    nodes = {span.span_id: SpanNode(span) for span in ordered}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_id or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def render_tree(roots: Iterable[SpanNode]) -> list[str]:
    """One line per span: tree glyphs for depth, then service, span name and duration in ms."""
    lines: list[str] = []
    for root in roots:
        lines.append(_label(root.span))
        _render_children(root, "", lines)
    return lines


def _render_children(node: SpanNode, indent: str, lines: list[str]) -> None:
    for position, child in enumerate(node.children):
        last = position == len(node.children) - 1
        lines.append(f"{indent}{'└─ ' if last else '├─ '}{_label(child.span)}")
        _render_children(child, indent + ("   " if last else "│  "), lines)


def _label(span: SpanRecord) -> str:
    failed = "  [ERROR]" if span.status == "ERROR" else ""
    return f"{span.service}  {span.name}  {span.duration_ms:.1f} ms{failed}"


def services_crossed(spans: Iterable[SpanRecord]) -> list[str]:
    """The processes a trace went through, in the order it first reached each."""
    crossed: list[str] = []
    for span in sorted(spans, key=lambda span: span.start_ns):
        if span.service not in crossed:
            crossed.append(span.service)
    return crossed
