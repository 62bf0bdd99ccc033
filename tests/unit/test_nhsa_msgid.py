"""NHSA msgids: code(12) + Beijing time(14) + node(1) + sequence(3), never repeated within a process
and never shared by two replicas that have their own nodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.insurance_adapter.adapters.nhsa import NhsaClient
from services.insurance_adapter.adapters.nhsa.msgid import NODES, PER_SECOND, MsgidSequence
from services.insurance_adapter.bootstrap import nhsa_client_config
from services.insurance_adapter.config import InsuranceAdapterSettings

CODE = "H35010200901"
NOON_BEIJING = datetime(2025, 3, 14, 4, 0, 0, 250_000, tzinfo=UTC)  # 12:00:00.25 in Beijing


class FrozenClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_a_msgid_has_the_standard_shape() -> None:
    msgid = MsgidSequence(CODE, FrozenClock(NOON_BEIJING), node=7).next()
    assert len(msgid) == 30 and msgid.isascii()
    assert (msgid[:12], msgid[12:26], msgid[26]) == (CODE, "20250314120000", "7")
    assert msgid[27:].isdigit()


def test_a_busy_second_never_repeats_a_msgid_and_borrows_the_next_second() -> None:
    clock = FrozenClock(NOON_BEIJING)
    sequence = MsgidSequence(CODE, clock, node=3)
    msgids = [sequence.next() for _ in range(PER_SECOND + 5)]
    assert len(set(msgids)) == len(msgids)
    assert {m[12:26] for m in msgids[:PER_SECOND]} == {"20250314120000"}
    assert {m[12:26] for m in msgids[PER_SECOND:]} == {"20250314120001"}
    clock.at += timedelta(seconds=1)  # the borrowed second is still being numbered
    later = sequence.next()
    assert later not in msgids and later[12:26] == "20250314120001"
    clock.at -= timedelta(seconds=5)  # a clock stepping back never reuses an earlier msgid
    assert sequence.next() not in msgids


def test_replicas_with_their_own_nodes_never_share_a_msgid() -> None:
    clock = FrozenClock(NOON_BEIJING)
    replicas = [MsgidSequence(CODE, clock, node=node) for node in range(NODES)]
    msgids = [replica.next() for _ in range(PER_SECOND) for replica in replicas]
    assert len(set(msgids)) == len(msgids) == NODES * PER_SECOND


def test_an_unset_node_is_drawn_and_a_bad_one_refused() -> None:
    assert 0 <= MsgidSequence(CODE, FrozenClock(NOON_BEIJING)).node < NODES
    with pytest.raises(ValueError):
        MsgidSequence(CODE, FrozenClock(NOON_BEIJING), node=NODES)


async def test_the_replica_node_comes_from_the_settings() -> None:
    settings = InsuranceAdapterSettings(nhsa_msgid_node=4)
    async with NhsaClient(nhsa_client_config(settings)) as client:
        assert client.new_msgid()[26] == "4"
    with pytest.raises(ValidationError):
        InsuranceAdapterSettings(nhsa_msgid_node=10)
