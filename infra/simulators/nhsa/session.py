"""9001 签到 / 9002 签退: a sign_no every business message must carry while it is valid."""

from __future__ import annotations

from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.wire import Refusal, now_in_shanghai, optional, required, wire_time

NOT_SIGNED_IN = "未签到或签到已失效，请先签到(9001)"


async def sign_in(call: Call) -> Answer:
    node = call.input_node("signIn")
    if not isinstance(node, dict):
        raise Refusal("signIn 节点格式错误")
    opter_no = required(node, "opter_no")
    sequence = await call.books.next_value("sign_no")
    sign_no = f"{call.admdvs}{now_in_shanghai(call.now):%Y%m%d%H%M%S}{sequence:06d}"
    await call.books.add_sign_in(sign_no, call.fixmedins_code, opter_no, int(call.now.timestamp()))
    output = {"signinoutb": {"sign_time": wire_time(call.now), "sign_no": sign_no}}
    return Answer(output, effect=sign_no)


async def sign_out(call: Call) -> Answer:
    node = call.input_node("signOut")
    sign_no = optional(node, "sign_no") if isinstance(node, dict) else ""
    row = await call.books.sign_in(sign_no) if sign_no else None
    if row is None or row.fixmedins_code != call.fixmedins_code:
        raise Refusal("签到流水号不存在")
    await call.books.sign_out(sign_no)
    return Answer({"signoutoutb": {"sign_time": wire_time(call.now)}}, effect=sign_no)


async def check_signed_in(call: Call) -> None:
    """Refuse a business message whose sign_no is unknown, signed out, expired or another's."""
    sign_no = str(call.envelope.get("sign_no") or "")
    row = await call.books.sign_in(sign_no) if sign_no else None
    if row is None or row.signed_out or row.fixmedins_code != call.fixmedins_code:
        raise Refusal(NOT_SIGNED_IN)
    if call.now.timestamp() - row.signed_in_at > call.sign_in_ttl_s:
        raise Refusal(NOT_SIGNED_IN)
