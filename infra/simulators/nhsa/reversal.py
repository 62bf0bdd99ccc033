"""2601 冲正: undo a message by its msgid (omsgid + oinfno), for a caller that lost the answer.

Reversible: 2201 (the visit is cancelled), 2204 (its lines are deleted), 2207 (the settlement is
revoked with an offsetting record, exactly as 2208 would). Reversing twice answers the same; a
message the platform never completed is refused with "原交易不存在", which tells the caller that
nothing happened.
"""

from __future__ import annotations

import json

from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.settlement import revoke
from infra.simulators.nhsa.visits import cancel_visit, delete_uploaded_lines
from infra.simulators.nhsa.wire import Refusal, required

REVERSIBLE = ("2201", "2204", "2207")


async def reverse(call: Call) -> Answer:
    data = call.data()
    omsgid, oinfno = required(data, "omsgid"), required(data, "oinfno")
    message = await call.books.message(omsgid)
    if message is None or message.infno != oinfno or message.fixmedins_code != call.fixmedins_code:
        raise Refusal(f"原交易不存在: {oinfno} {omsgid}")
    if oinfno not in REVERSIBLE:
        raise Refusal(f"交易 {oinfno} 不支持冲正")
    if not message.reversed:
        await _undo(call, oinfno, message.effect)
        await call.books.mark_message_reversed(omsgid)
    return Answer({"data": {"omsgid": omsgid, "oinfno": oinfno}}, effect=omsgid)


async def _undo(call: Call, oinfno: str, effect: str) -> None:
    if oinfno == "2207":
        settlement = await call.books.settlement(effect)
        if settlement is not None:
            await revoke(call, settlement)
    elif oinfno == "2201":
        visit = await call.books.visit(effect)
        if visit is not None and visit.status == "registered":
            await cancel_visit(call, visit)
    else:
        uploaded = [(str(mdtrt_id), str(sn)) for mdtrt_id, sn in json.loads(effect)]
        await delete_uploaded_lines(call, uploaded)
