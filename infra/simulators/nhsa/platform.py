"""The insurer's transaction desk: one envelope in, one envelope out.

Envelope checks, sign-in checks and replay by msgid live here, once, for every transaction:
- a mutating message (sign-in, registration, fee upload, settlement, revocation, reversal) runs
  under one write lock and inside one database transaction, and its answer is stored with its
  msgid, so the same msgid sent again gets the same answer without a second effect;
- a refused message changes nothing and is not stored, so it may be retried under the same msgid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.simulators.nhsa.context import Answer, Call, Handler
from infra.simulators.nhsa.persons import query_person
from infra.simulators.nhsa.reversal import reverse
from infra.simulators.nhsa.session import check_signed_in, sign_in, sign_out
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.settlement import presettle, query_settlement, revoke_settlement, settle
from infra.simulators.nhsa.statement import reconcile_totals
from infra.simulators.nhsa.store import InsurerBooks, NhsaStore
from infra.simulators.nhsa.visits import (
    cancel_registration,
    register_visit,
    revoke_fee_details,
    upload_fee_details,
)
from infra.simulators.nhsa.wire import JsonObject, Refusal, dumps, now_in_shanghai, stamp_17, utc_now

SUCCESS, FAILURE = 0, -1
_ENVELOPE_FIELDS = ("infno", "msgid", "mdtrtarea_admvs", "infver", "opter_type", "opter", "fixmedins_code")


@dataclass(frozen=True, slots=True)
class Transaction:
    handler: Handler
    mutating: bool
    needs_sign_in: bool = True


TRANSACTIONS: dict[str, Transaction] = {
    "9001": Transaction(sign_in, mutating=True, needs_sign_in=False),
    "9002": Transaction(sign_out, mutating=True, needs_sign_in=False),
    "1101": Transaction(query_person, mutating=False),
    "2201": Transaction(register_visit, mutating=True),
    "2202": Transaction(cancel_registration, mutating=True),
    "2204": Transaction(upload_fee_details, mutating=True),
    "2205": Transaction(revoke_fee_details, mutating=True),
    "2206": Transaction(presettle, mutating=False),
    "2207": Transaction(settle, mutating=True),
    "2208": Transaction(revoke_settlement, mutating=True),
    "2601": Transaction(reverse, mutating=True),
    "5203": Transaction(query_settlement, mutating=False),
    "3201": Transaction(reconcile_totals, mutating=False),
}


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    infcode: int
    err_msg: str | None


class NhsaPlatform:
    def __init__(
        self, store: NhsaStore, settings: NhsaSimSettings, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._numbers = _MessageNumbers(store, self._write_lock)

    async def answer(self, envelope: Any) -> Reply:
        received = self._clock()
        number = await self._numbers.take()
        try:
            checked = _checked_envelope(envelope)
            transaction = TRANSACTIONS.get(str(checked["infno"]))
            if transaction is None:
                raise Refusal(f"交易编号 {checked['infno']} 不存在或暂不支持")
            if transaction.mutating:
                return await self._mutate(transaction, checked, received, number)
            async with self._store.books() as books:
                return await self._run(transaction, self._call(checked, books, received), number)
        except Refusal as refusal:
            return self._reply(number, received, FAILURE, None, refusal.err_msg)

    async def settlement_book(self) -> list[dict[str, object]]:
        """Every settlement and offset booked, for tests and operators of the simulator."""
        async with self._store.books() as books:
            rows = await books.all_settlements()
        return [
            {
                "setl_id": row.setl_id,
                "kind": row.kind,
                "msgid": row.msgid,
                "mdtrt_id": row.mdtrt_id,
                "chrg_bchno": row.chrg_bchno,
                "original_setl_id": row.original_setl_id,
                "revoked_by": row.revoked_by,
                "psn_cash_pay_fen": row.psn_cash_pay_fen,
            }
            for row in rows
        ]

    async def fee_batch_book(self) -> list[dict[str, object]]:
        """Every charge batch whose fee lines (2204) the insurer still holds, for tests and operators."""
        async with self._store.books() as books:
            rows = await books.fee_batches()
        return [
            {
                "mdtrt_id": r.mdtrt_id,
                "chrg_bchno": r.chrg_bchno,
                "lines": r.lines,
                "amount_fen": int(r.amount_fen),
            }
            for r in rows
        ]

    async def expire_sign_ins(self) -> None:
        async with self._write_lock, self._store.books() as books:
            await books.sign_out()

    async def _mutate(
        self, transaction: Transaction, envelope: JsonObject, received: datetime, number: int
    ) -> Reply:
        async with self._write_lock, self._store.books() as books:
            call = self._call(envelope, books, received)
            known = await books.message(call.msgid)
            if known is not None:
                if (known.infno, known.fixmedins_code) != (call.infno, call.fixmedins_code):
                    raise Refusal(f"报文ID {call.msgid} 重复")
                return Reply(known.response, SUCCESS, None)
            reply = await self._run(transaction, call, number)
            await books.record_message(call.msgid, call.infno, call.fixmedins_code, reply.effect, reply.text)
            return reply

    async def _run(self, transaction: Transaction, call: Call, number: int) -> _EffectReply:
        if transaction.needs_sign_in:
            await check_signed_in(call)
        answer: Answer = await transaction.handler(call)
        reply = self._reply(number, call.now, SUCCESS, answer.output, None, answer.warn_msg)
        return _EffectReply(reply.text, reply.infcode, None, answer.effect)

    def _call(self, envelope: JsonObject, books: InsurerBooks, received: datetime) -> Call:
        settings = self._settings
        return Call(
            envelope, books, received, settings.admdvs, settings.hospital_level, settings.sign_in_ttl_s
        )

    def _reply(
        self,
        number: int,
        received: datetime,
        infcode: int,
        output: JsonObject | None,
        err_msg: str | None,
        warn_msg: str | None = None,
    ) -> Reply:
        respond = self._clock()
        envelope = {
            "infcode": infcode,
            "inf_refmsgid": f"{self._settings.admdvs}{now_in_shanghai(respond):%Y%m%d%H%M%S}{number:010d}",
            "refmsg_time": stamp_17(received),
            "respond_time": stamp_17(respond),
            "err_msg": err_msg,
            "warn_msg": warn_msg,
            "cainfo": None,
            "signtype": None,
            "output": output,
        }
        return Reply(dumps(envelope), infcode, err_msg)


@dataclass(frozen=True, slots=True)
class _EffectReply(Reply):
    effect: str


def _checked_envelope(envelope: Any) -> JsonObject:
    if not isinstance(envelope, dict):
        raise Refusal("报文格式错误：不是 JSON 对象")
    for field in _ENVELOPE_FIELDS:
        if not str(envelope.get(field) or "").strip():
            raise Refusal(f"公共输入 {field} 不能为空")
    if len(str(envelope["msgid"])) > 30:
        raise Refusal("msgid 长度不能超过 30")
    checked: JsonObject = {**envelope, "input": envelope.get("input") or {}}
    if not isinstance(checked["input"], dict):
        raise Refusal("input 必须是 JSON 对象")
    return checked


class _MessageNumbers:
    """inf_refmsgid sequence numbers, taken from the database in blocks so that reads stay reads."""

    BLOCK = 1_000

    def __init__(self, store: NhsaStore, write_lock: asyncio.Lock) -> None:
        self._store = store
        self._write_lock = write_lock
        self._next = 0
        self._limit = 0
        self._lock = asyncio.Lock()

    async def take(self) -> int:
        async with self._lock:
            if self._next >= self._limit:
                async with self._write_lock, self._store.books() as books:
                    self._limit = await books.next_value("inf_refmsgid", self.BLOCK)
                self._next = self._limit - self.BLOCK
            self._next += 1
            return self._next
