"""No patient's ID number or name in clear in any log, span or event of the mesh, after the
flows of the other end-to-end tests have run through it (this module sorts after them)."""

from __future__ import annotations

import grpc
import pytest
from medpay.events.v1 import events_pb2, events_pb2_grpc

from infra.local.processes import MeshProcesses
from tests.e2e.flows import PEOPLE

pytestmark = pytest.mark.e2e


def _leaks(text: str) -> list[str]:
    found = [person.certno for person in PEOPLE if person.certno in text]
    return found + [
        person.psn_name for person in PEOPLE if len(person.psn_name) > 1 and person.psn_name in text
    ]


def test_logs_and_spans_hold_no_patient_identifier(mesh: MeshProcesses) -> None:
    files = [*(mesh.layout.workdir / "logs").glob("*.log"), *(mesh.layout.workdir / "traces").glob("*.jsonl")]
    assert files
    for path in files:
        assert _leaks(path.read_text(encoding="utf-8", errors="replace")) == [], path.name


@pytest.mark.parametrize("service", ["payment-core", "insurance-adapter"])
async def test_events_hold_no_patient_identifier(mesh: MeshProcesses, service: str) -> None:
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address(service)) as channel:
        feed = events_pb2_grpc.EventFeedServiceStub(channel)
        reply = await feed.ListEvents(
            events_pb2.ListEventsRequest(after_sequence=0, page_size=1000), timeout=10
        )
    assert reply.events
    assert _leaks(str(list(reply.events))) == []
