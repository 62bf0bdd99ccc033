"""One insured settlement is one trace with spans from every process it crossed."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from infra.local.processes import MeshProcesses
from tests.e2e.flows import (
    PEOPLE,
    Stubs,
    insured_order_request,
    metadata,
    new_traceparent,
    pay_and_settle,
    trace_id_of,
)

pytestmark = pytest.mark.e2e


def _spans_of(mesh: MeshProcesses, trace_id: str) -> list[dict[str, object]]:
    spans = []
    for path in (mesh.layout.workdir / "traces").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            span = json.loads(line)
            if span["trace_id"] == trace_id:
                spans.append(span)
    return spans


async def test_one_settlement_is_one_trace_across_the_mesh(mesh: MeshProcesses, stubs: Stubs) -> None:
    traceparent = new_traceparent()
    request = insured_order_request(PEOPLE[10], f"MZ{uuid.uuid4().hex[:12]}", 4)
    created = await stubs.payment.CreatePaymentOrder(request, timeout=30, metadata=metadata(traceparent))
    person = PEOPLE[10]
    await pay_and_settle(mesh, stubs, created.order, traceparent)

    wanted = {"payment-core", "insurance-adapter", "nhsa-sim", "wechatpay-sim"}
    root_parent = traceparent.split("-")[2]
    spans: list[dict[str, object]] = []
    for _ in range(100):  # span files are written in batches, each process on its own clock
        spans = _spans_of(mesh, trace_id_of(traceparent))
        if _complete(spans, wanted, root_parent):
            break
        await asyncio.sleep(0.1)
    assert wanted <= {str(s["service"]) for s in spans}
    nhsa_calls = {
        str(s["attributes"].get("medpay.nhsa.infno")) for s in spans if isinstance(s["attributes"], dict)
    }
    assert {"2206", "2207"} <= nhsa_calls
    orphans = [s["name"] for s in spans if s["parent_id"] not in _ids(spans) | {root_parent}]
    assert not orphans, f"spans lost their parent: {orphans}"
    text = json.dumps(spans, ensure_ascii=False)
    assert person.certno not in text and person.psn_name not in text


def _ids(spans: list[dict[str, object]]) -> set[object]:
    return {s["span_id"] for s in spans}


def _complete(spans: list[dict[str, object]], wanted: set[str], root_parent: str) -> bool:
    """Every process seen, the settlement sent to the insurer, and every parent written."""
    services = {str(s["service"]) for s in spans}
    settled = any(
        isinstance(s["attributes"], dict) and s["attributes"].get("medpay.nhsa.infno") == "2207"
        for s in spans
    )
    parents_known = all(s["parent_id"] in _ids(spans) | {root_parent} for s in spans)
    return wanted <= services and settled and parents_known
