"""Reading one settlement's trace back from the per-process span files and drawing its tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.local.traces import (
    SpanRecord,
    build_tree,
    load_spans,
    parse_span,
    render_tree,
    services_crossed,
    spans_of_trace,
    without_asgi_messages,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "00f067aa0ba902b7a3ce929d0e0e4736"
MS = 1_000_000


def _span(
    span_id: str, parent: str | None, name: str, service: str, start_ms: int, end_ms: int, **extra: Any
) -> dict[str, Any]:
    return {
        "trace_id": extra.pop("trace_id", TRACE),
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "service": service,
        "kind": extra.pop("kind", "INTERNAL"),
        "start_ns": start_ms * MS,
        "end_ns": end_ms * MS,
        "status": extra.pop("status", "UNSET"),
        "attributes": extra,
    }


def _write(path: Path, spans: list[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in spans) + tail, encoding="utf-8")


def _settlement(directory: Path) -> None:
    """An insured settlement as four processes would have written it (out of order, one torn line)."""
    _write(
        directory / "his-driver.jsonl",
        [
            _span("a1", None, "his.outpatient_visit", "his-driver", 0, 400),
            _span(
                "a2",
                "a1",
                "/medpay.payment.v1.PaymentService/CreatePaymentOrder",
                "his-driver",
                5,
                120,
                kind="CLIENT",
            ),
            _span("a3", "a1", "POST", "his-driver", 200, 230, kind="CLIENT"),
            _span("z1", None, "his.outpatient_visit", "his-driver", 0, 50, trace_id=OTHER_TRACE),
        ],
    )
    _write(
        directory / "payment-core.jsonl",
        [
            _span("b2", "b1", "presettle", "payment-core", 12, 110),
            _span(
                "b1",
                "a2",
                "/medpay.payment.v1.PaymentService/CreatePaymentOrder",
                "payment-core",
                10,
                115,
                kind="SERVER",
            ),
        ],
        tail='{"trace_id": "4bf92f3577b3',  # torn: the process was still writing
    )
    _write(
        directory / "insurance-adapter.jsonl",
        [
            _span(
                "c1", "b2", "/medpay.insurance.v1.InsuranceService/Presettle", "insurance-adapter", 15, 105
            ),
            _span("c2", "c1", "POST", "insurance-adapter", 20, 40, status="ERROR"),
        ],
    )
    _write(
        directory / "nhsa-sim.jsonl", [_span("d1", "lost-parent", "POST /fsi/api/2206", "nhsa-sim", 50, 90)]
    )
    (directory / "notes.txt").write_text("not spans", encoding="utf-8")


def test_load_spans_reads_every_process_and_skips_torn_lines(tmp_path: Path) -> None:
    _settlement(tmp_path)
    spans = load_spans(tmp_path)
    assert len(spans) == 9
    assert {span.service for span in spans} == {"his-driver", "payment-core", "insurance-adapter", "nhsa-sim"}


def test_load_spans_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert load_spans(tmp_path / "nowhere") == []


def test_parse_span_rejects_foreign_lines() -> None:
    assert parse_span("") is None
    assert parse_span('{"trace_id": "x"}') is None
    assert parse_span("[1, 2]") is None


def test_spans_of_trace_keeps_one_trace_in_start_order_without_duplicates(tmp_path: Path) -> None:
    _settlement(tmp_path)
    spans = load_spans(tmp_path)
    trace = spans_of_trace([*spans, spans[0]], TRACE)
    assert [span.span_id for span in trace] == ["a1", "a2", "b1", "b2", "c1", "c2", "d1", "a3"]


def test_build_tree_nests_across_processes(tmp_path: Path) -> None:
    _settlement(tmp_path)
    roots = build_tree(spans_of_trace(load_spans(tmp_path), TRACE))
    assert [root.span.span_id for root in roots] == ["a1", "d1"]  # d1's parent was never recorded
    visit = roots[0]
    assert [child.span.span_id for child in visit.children] == ["a2", "a3"]
    server = visit.children[0].children[0]
    assert server.span.service == "payment-core"
    assert [node.span.span_id for node in server.children[0].children] == ["c1"]


def test_render_tree_shows_depth_service_name_and_duration(tmp_path: Path) -> None:
    _settlement(tmp_path)
    lines = render_tree(build_tree(spans_of_trace(load_spans(tmp_path), TRACE)))
    assert lines == [
        "his-driver  his.outpatient_visit  400.0 ms",
        "├─ his-driver  /medpay.payment.v1.PaymentService/CreatePaymentOrder  115.0 ms",
        "│  └─ payment-core  /medpay.payment.v1.PaymentService/CreatePaymentOrder  105.0 ms",
        "│     └─ payment-core  presettle  98.0 ms",
        "│        └─ insurance-adapter  /medpay.insurance.v1.InsuranceService/Presettle  90.0 ms",
        "│           └─ insurance-adapter  POST  20.0 ms  [ERROR]",
        "└─ his-driver  POST  30.0 ms",
        "nhsa-sim  POST /fsi/api/2206  40.0 ms",
    ]


def test_services_crossed_in_order_of_arrival(tmp_path: Path) -> None:
    _settlement(tmp_path)
    trace = spans_of_trace(load_spans(tmp_path), TRACE)
    assert services_crossed(trace) == ["his-driver", "payment-core", "insurance-adapter", "nhsa-sim"]


def test_a_span_that_names_itself_as_parent_is_a_root() -> None:
    loop = SpanRecord(TRACE, "e1", "e1", "odd", "payment-core", "INTERNAL", 0, MS, "UNSET")
    assert [root.span.span_id for root in build_tree([loop])] == ["e1"]
    assert render_tree(build_tree([loop])) == ["payment-core  odd  1.0 ms"]


def test_asgi_message_spans_are_left_out_of_the_picture() -> None:
    server = SpanRecord(TRACE, "f1", None, "POST /sim/pay", "wechatpay-sim", "SERVER", 0, 2 * MS, "UNSET")
    receive = SpanRecord(
        TRACE, "f2", "f1", "POST /sim/pay http receive", "wechatpay-sim", "INTERNAL", 0, 1, "UNSET"
    )
    send = SpanRecord(
        TRACE, "f3", "f1", "POST /sim/pay http send", "wechatpay-sim", "INTERNAL", 1, 2, "UNSET"
    )
    assert without_asgi_messages([server, receive, send]) == [server]
