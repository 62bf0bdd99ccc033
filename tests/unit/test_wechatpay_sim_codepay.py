"""The WeChat Pay simulator's code payments (付款码): the code's shape, SUCCESS at once or USERPAYING
while the patient confirms (then SUCCESS, PAYERROR or nothing), and reverse with its 15 s rule. On
the gateway rules directly, with a clock the test moves (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.simulators.wechatpay.bill import render_all_bill
from infra.simulators.wechatpay.codepay import CodePayDesk
from infra.simulators.wechatpay.faults import validate
from infra.simulators.wechatpay.gateway import Merchant, SimulatedGateway, WechatError
from infra.simulators.wechatpay.keys import APPID, MCHID
from infra.simulators.wechatpay.shapes import SHANGHAI, transaction_json
from infra.simulators.wechatpay.store import SimStore

CODE = "134567890123456789"
NO = "MP0000000001"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 21, 5, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def pass_s(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def codepay_body(out_trade_no: str = NO, code: str = CODE, total_fen: int = 12_500) -> dict[str, object]:
    return {
        "appid": APPID, "mchid": MCHID, "description": "门诊缴费-西药费", "out_trade_no": out_trade_no,
        "payer": {"auth_code": code}, "amount": {"total": total_fen, "currency": "CNY"},
        "scene_info": {"store_info": {"out_id": "FZ900"}},
    }  # fmt: skip


def desk() -> tuple[CodePayDesk, SimulatedGateway, Clock]:
    clock, store = Clock(), SimStore(Path(":memory:"))
    merchant = Merchant(MCHID, APPID)
    return CodePayDesk(store, merchant, clock, 15.0), SimulatedGateway(store, merchant, clock), clock


def reverse_body() -> dict[str, object]:
    return {"appid": APPID, "mchid": MCHID}


def test_a_code_pays_at_once_and_a_replay_is_the_same_payment() -> None:
    codepay, gateway, _ = desk()
    paid = codepay.pay(codepay_body(), None, None)
    assert (paid.trade_state, paid.trade_type, paid.total_fen) == ("SUCCESS", "MICROPAY", 12_500)
    assert paid.transaction_id and paid.success_time is not None
    again = codepay.pay(codepay_body(), None, None)
    assert again.transaction_id == paid.transaction_id
    assert gateway.order(NO).trade_state == "SUCCESS"
    with pytest.raises(WechatError) as reused:
        codepay.pay(codepay_body(total_fen=12_600), None, None)
    assert (reused.value.status, reused.value.code) == (403, "OUT_TRADE_NO_USED")


@pytest.mark.parametrize(
    "code", ["13456789012345678", "1345678901234567890", "164567890123456789", "284567890123456789",
             "09456789012345678a", ""],
)  # fmt: skip
def test_a_code_not_shaped_as_wechats_is_refused_and_not_echoed(code: str) -> None:
    codepay, gateway, _ = desk()
    with pytest.raises(WechatError) as refused:
        codepay.pay(codepay_body(code=code), None, None)
    assert (refused.value.status, refused.value.code) == (400, "PARAM_ERROR")
    assert not code or code not in refused.value.message
    with pytest.raises(WechatError):
        gateway.order(NO)


@pytest.mark.parametrize(("mode", "final"), [("confirms", "SUCCESS"), ("cancels", "PAYERROR")])
def test_the_patient_decides_after_the_armed_delay(mode: str, final: str) -> None:
    codepay, gateway, clock = desk()
    assert codepay.pay(codepay_body(), None, (mode, 10.0)).trade_state == "USERPAYING"
    clock.pass_s(9)
    assert gateway.order(NO).trade_state == "USERPAYING"
    assert transaction_json(gateway.order(NO))["trade_state_desc"] == "用户支付中"
    clock.pass_s(1)
    decided = gateway.order(NO)
    assert decided.trade_state == final
    assert (decided.transaction_id is not None) is (final == "SUCCESS")


def test_a_patient_who_never_decides_stays_userpaying_until_they_confirm_by_hand() -> None:
    codepay, gateway, clock = desk()
    codepay.pay(codepay_body(), None, ("never", 0.0))
    clock.pass_s(3600)
    assert gateway.order(NO).trade_state == "USERPAYING"
    paid, newly = gateway.patient_pays(NO, lambda: False)
    assert (paid.trade_state, newly) == ("SUCCESS", True)
    assert paid.notify_url == ""  # a code payment sends no notification


def test_reverse_waits_15_s_then_revokes_once_and_the_patient_can_no_longer_pay() -> None:
    codepay, gateway, clock = desk()
    codepay.pay(codepay_body(), None, ("confirms", 20.0))
    clock.pass_s(14)
    with pytest.raises(WechatError) as too_soon:
        codepay.reverse(NO, reverse_body(), gateway.order(NO))
    assert (too_soon.value.status, too_soon.value.code) == (400, "INVALID_REQUEST")
    clock.pass_s(1)
    codepay.reverse(NO, reverse_body(), gateway.order(NO))
    codepay.reverse(NO, reverse_body(), gateway.order(NO))  # again: nothing more
    clock.pass_s(10)  # past the moment the patient would have confirmed
    assert gateway.order(NO).trade_state == "REVOKED"
    with pytest.raises(WechatError) as closed:
        gateway.patient_pays(NO, lambda: True)
    assert closed.value.code == "ORDERCLOSED"


def test_reverse_of_a_paid_code_payment_gives_the_money_back() -> None:
    codepay, gateway, clock = desk()
    codepay.pay(codepay_body(), None, None)
    clock.pass_s(15)
    codepay.reverse(NO, reverse_body(), gateway.order(NO))
    assert gateway.order(NO).trade_state == "REVOKED"


def test_a_paid_then_reversed_code_payment_reads_revoked_in_the_bill() -> None:
    codepay, gateway, clock = desk()
    codepay.pay(codepay_body(), None, None)
    clock.pass_s(15)
    codepay.reverse(NO, reverse_body(), gateway.order(NO))
    payments, _ = gateway.bill_day(clock.now.astimezone(SHANGHAI).date())
    (line,) = [row for row in render_all_bill(payments, []).splitlines() if NO in row]
    assert "`MICROPAY,`REVOKED," in line


def test_only_code_payments_are_reversed_and_only_by_their_merchant() -> None:
    codepay, gateway, clock = desk()
    gateway.place_order("NATIVE", {**codepay_body(), "notify_url": "https://his.example/notify"}, None)
    clock.pass_s(60)
    with pytest.raises(WechatError) as native:
        codepay.reverse(NO, reverse_body(), gateway.order(NO))
    assert native.value.code == "INVALID_REQUEST"
    codepay.pay(codepay_body("MP0000000002"), None, None)
    clock.pass_s(60)
    with pytest.raises(WechatError) as foreign:
        codepay.reverse(
            "MP0000000002", {"appid": APPID, "mchid": "1900000000"}, gateway.order("MP0000000002")
        )
    assert foreign.value.code == "PARAM_ERROR"


@pytest.mark.parametrize(
    ("operation", "mode", "allowed"),
    [("codepay", "confirms", True), ("codepay", "cancels", True), ("codepay", "never", True),
     ("codepay", "timeout", True), ("reverse", "http_500", True), ("reverse", "never", False),
     ("query", "confirms", False)],
)  # fmt: skip
def test_codepay_faults(operation: str, mode: str, allowed: bool) -> None:
    assert (validate(operation, mode, 1, 1.0) is None) is allowed
