"""The NHSA simulator's transaction desk, driven envelope by envelope with a controlled clock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.simulators.nhsa.app import CALL_SERVICE_PATH, build_app
from infra.simulators.nhsa.gateway import tif_signature
from infra.simulators.nhsa.platform import NhsaPlatform
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.store import NhsaStore
from infra.simulators.nhsa.wire import dumps, loads
from infra.simulators.population import insured_people

PEOPLE = insured_people(40)
EMPLOYEE = next(p for p in PEOPLE if p.insutype == "310" and p.psn_type == "11")
FIXMEDINS = "H35010200901"
# 2025-03-03 23:30 in Beijing
LATE_EVENING = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)


class Desk:
    """Sends envelopes straight to the platform; the clock is moved by hand."""

    def __init__(self, platform: NhsaPlatform, clock: list[datetime]) -> None:
        self.platform = platform
        self.clock = clock
        self.sign_no = ""
        self._numbers = itertools.count(1)

    def msgid(self) -> str:
        return f"{FIXMEDINS}20250303000000{next(self._numbers):04d}"

    async def call(self, infno: str, node: dict[str, Any], msgid: str | None = None) -> dict[str, Any]:
        envelope = {
            "infno": infno,
            "msgid": msgid or self.msgid(),
            "mdtrtarea_admvs": "350100",
            "insuplc_admdvs": "350100",
            "recer_sys_code": "FSI_LOCAL",
            "infver": "V1.0",
            "opter_type": "1",
            "opter": "t01",
            "opter_name": "测试",
            "inf_time": "2025-03-03 09:00:00",
            "fixmedins_code": FIXMEDINS,
            "fixmedins_name": "九〇〇医院",
            "sign_no": self.sign_no,
            "input": node,
        }
        reply = await self.platform.answer(loads(dumps(envelope)))
        body: dict[str, Any] = loads(reply.text)
        return body

    async def ok(self, infno: str, node: dict[str, Any], msgid: str | None = None) -> dict[str, Any]:
        body = await self.call(infno, node, msgid)
        assert body["infcode"] == 0, body["err_msg"]
        output: dict[str, Any] = body["output"]
        return output

    async def sign_in(self) -> None:
        output = await self.ok("9001", {"signIn": {"opter_no": "t01", "mac": "m", "ip": "127.0.0.1"}})
        self.sign_no = output["signinoutb"]["sign_no"]

    async def visit(self, otp_no: str) -> str:
        data = {"psn_no": EMPLOYEE.psn_no, "insutype": "310", "ipt_otp_no": otp_no, "mdtrt_cert_type": "02"}
        return str((await self.ok("2201", {"data": data}))["data"]["mdtrt_id"])

    async def upload(
        self, mdtrt_id: str, batch: str, lines: list[tuple[str, str, str]]
    ) -> list[dict[str, Any]]:
        feedetail = [
            {
                "feedetl_sn": f"{batch}-{n}",
                "mdtrt_id": mdtrt_id,
                "psn_no": EMPLOYEE.psn_no,
                "chrg_bchno": batch,
                "med_list_codg": code,
                "medins_list_codg": code,
                "det_item_fee_sumamt": Decimal(amount),
                "cnt": Decimal(cnt),
                "pric": Decimal(amount) / Decimal(cnt),
            }
            for n, (code, amount, cnt) in enumerate(lines)
        ]
        result: list[dict[str, Any]] = (await self.ok("2204", {"feedetail": feedetail}))["result"]
        return result

    def settlement_data(self, mdtrt_id: str, batch: str, medfee: str) -> dict[str, Any]:
        return {
            "psn_no": EMPLOYEE.psn_no,
            "mdtrt_id": mdtrt_id,
            "chrg_bchno": batch,
            "insutype": "310",
            "medfee_sumamt": Decimal(medfee),
            "acct_used_flag": "0",
            "med_type": "11",
            "mdtrt_cert_type": "02",
        }

    async def settle(self, mdtrt_id: str, batch: str, medfee: str) -> dict[str, Any]:
        setlinfo: dict[str, Any] = (
            await self.ok("2207", {"data": self.settlement_data(mdtrt_id, batch, medfee)})
        )["setlinfo"]
        return setlinfo

    async def statement(self, first: str, last: str, medfee: str, count: int) -> dict[str, Any]:
        data = {
            "insutype": "310",
            "clr_type": "11",
            "setl_optins": "350100",
            "stmt_begndate": first,
            "stmt_enddate": last,
            "medfee_sumamt": Decimal(medfee),
            "fund_pay_sumamt": Decimal("0.00"),
            "acct_pay": Decimal("0.00"),
            "fixmedins_setl_cnt": count,
        }
        stmtinfo: dict[str, Any] = (await self.ok("3201", {"data": data}))["stmtinfo"]
        return stmtinfo


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NhsaStore]:
    opened = await NhsaStore.open(tmp_path / "nhsa.sqlite3", population=len(PEOPLE))
    yield opened
    await opened.close()


@pytest.fixture
async def desk(store: NhsaStore) -> Desk:
    clock = [LATE_EVENING]
    platform = NhsaPlatform(store, NhsaSimSettings(population=len(PEOPLE)), clock=lambda: clock[0])
    signed = Desk(platform, clock)
    await signed.sign_in()
    return signed


async def test_business_call_without_sign_in_is_refused(desk: Desk) -> None:
    desk.sign_no = ""
    body = await desk.call("1101", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": EMPLOYEE.certno}})
    assert (body["infcode"], body["output"]) == (-1, None)
    assert "未签到" in body["err_msg"]


async def test_envelope_carries_the_reply_fields(desk: Desk) -> None:
    body = await desk.call("1101", {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": EMPLOYEE.ecert_token}})
    assert body["infcode"] == 0 and body["output"]["baseinfo"]["psn_no"] == EMPLOYEE.psn_no
    assert len(body["inf_refmsgid"]) == 30 and body["inf_refmsgid"].startswith("350100")
    assert len(body["refmsg_time"]) == 17 and len(body["respond_time"]) == 17


async def test_a_msgid_reused_for_another_transaction_is_refused(desk: Desk) -> None:
    msgid = desk.msgid()
    await desk.ok(
        "2201", {"data": {"psn_no": EMPLOYEE.psn_no, "insutype": "310", "ipt_otp_no": "MZ1"}}, msgid
    )
    body = await desk.call(
        "2205", {"data": {"mdtrt_id": "x", "psn_no": EMPLOYEE.psn_no, "chrg_bchno": "0000"}}, msgid
    )
    assert body["infcode"] == -1 and "重复" in body["err_msg"]


async def test_fee_detail_as_one_object_and_an_item_outside_the_catalogue(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ2")
    line = {
        "feedetl_sn": "1",
        "mdtrt_id": mdtrt_id,
        "psn_no": EMPLOYEE.psn_no,
        "chrg_bchno": "B1",
        "med_list_codg": "NOT-IN-CATALOGUE",
        "medins_list_codg": "LOCAL-1",
        "det_item_fee_sumamt": "12.00",
        "cnt": "2",
        "pric": "6.00",
    }
    result = (await desk.ok("2204", {"feedetail": line}))["result"]
    assert result[0]["chrgitm_lv"] == "03" and result[0]["fulamt_ownpay_amt"] == Decimal("12.00")
    assert result[0]["memo"]


async def test_fee_line_whose_total_is_not_price_times_count_is_refused(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ3")
    line = {
        "feedetl_sn": "1",
        "mdtrt_id": mdtrt_id,
        "psn_no": EMPLOYEE.psn_no,
        "chrg_bchno": "B1",
        "med_list_codg": "XY0001",
        "det_item_fee_sumamt": "30.00",
        "cnt": "2",
        "pric": "12.50",
    }
    body = await desk.call("2204", {"feedetail": [line]})
    assert body["infcode"] == -1 and "不符" in body["err_msg"]


async def test_deductible_carries_over_and_a_revocation_gives_it_back(desk: Desk) -> None:
    first = await desk.visit("MZ4")
    await desk.upload(first, "B1", [("ZC0004", "30.00", "1"), ("JC0001", "80.00", "1")])
    one = await desk.settle(first, "B1", "110.00")
    assert one["act_pay_dedc"] == Decimal("110.00") and one["hifp_pay"] == Decimal("0.00")

    second = await desk.visit("MZ5")
    await desk.upload(second, "B1", [("JC0004", "480.00", "1"), ("JC0005", "160.00", "1")])
    pre = await desk.ok("2206", {"data": desk.settlement_data(second, "B1", "640.00")})
    # 头颅磁共振 is 乙类 10 %: in scope 432 + 160 = 592, of which 490 deductible left
    assert pre["setlinfo"]["act_pay_dedc"] == Decimal("490.00")
    assert pre["setlinfo"]["hifp_pay"] == Decimal("79.56")  # 102.00 × 78 %

    revoke = {"setl_id": one["setl_id"], "mdtrt_id": first, "psn_no": EMPLOYEE.psn_no}
    offset = (await desk.ok("2208", {"data": revoke}))["setlinfo"]
    assert offset["medfee_sumamt"] == Decimal("-110.00") and offset["orig_setl_id"] == one["setl_id"]
    pre = await desk.ok("2206", {"data": desk.settlement_data(second, "B1", "640.00")})
    assert pre["setlinfo"]["act_pay_dedc"] == Decimal("592.00")


async def test_3201_counts_by_beijing_settlement_date(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ6")
    await desk.upload(mdtrt_id, "B1", [("ZC0001", "25.00", "1")])
    settled = await desk.settle(mdtrt_id, "B1", "25.00")
    assert settled["setl_time"] == "2025-03-03 23:30:00"
    desk.clock[0] = LATE_EVENING + timedelta(hours=1)  # 00:30 the next day in Beijing
    await desk.ok("2208", {"data": {"setl_id": settled["setl_id"], "psn_no": EMPLOYEE.psn_no}})

    day_one = await desk.statement("2025-03-03", "2025-03-03", "25.00", 1)
    day_two = await desk.statement("2025-03-04", "2025-03-04", "-25.00", -1)
    both = await desk.statement("2025-03-03", "2025-03-04", "0.00", 0)
    assert [s["stmt_rslt"] for s in (day_one, day_two, both)] == ["0", "0", "0"]
    wrong = await desk.statement("2025-03-03", "2025-03-03", "0.00", 0)
    assert wrong["stmt_rslt"] == "1" and wrong["insu_medfee_sumamt"] == Decimal("25.00")
    assert wrong["insu_setl_cnt"] == 1


async def test_settled_batch_cannot_be_withdrawn_but_an_unsettled_one_can(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ7")
    await desk.upload(mdtrt_id, "B1", [("ZC0001", "25.00", "1")])
    await desk.upload(mdtrt_id, "B2", [("XY0001", "12.50", "1")])
    await desk.settle(mdtrt_id, "B1", "25.00")
    withdraw = {"mdtrt_id": mdtrt_id, "psn_no": EMPLOYEE.psn_no, "chrg_bchno": "B1"}
    assert "已结算" in (await desk.call("2205", {"data": withdraw}))["err_msg"]
    await desk.ok("2205", {"data": {**withdraw, "chrg_bchno": "0000"}})
    body = await desk.call("2206", {"data": desk.settlement_data(mdtrt_id, "B2", "12.50")})
    assert body["infcode"] == -1 and "未上传" in body["err_msg"]


async def test_settle_refuses_amounts_that_differ_from_the_presettlement(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ8")
    await desk.upload(mdtrt_id, "B1", [("XY0012", "28.00", "1")])
    data = {**desk.settlement_data(mdtrt_id, "B1", "28.00"), "fulamt_ownpay_amt": Decimal("0.00")}
    body = await desk.call("2207", {"data": data})
    assert body["infcode"] == -1 and "预结算" in body["err_msg"]
    wrong_total = desk.settlement_data(mdtrt_id, "B1", "27.00")
    assert (await desk.call("2207", {"data": wrong_total}))["infcode"] == -1


async def test_reversal_of_a_registration_cancels_the_visit(desk: Desk) -> None:
    msgid = desk.msgid()
    data = {"psn_no": EMPLOYEE.psn_no, "insutype": "310", "ipt_otp_no": "MZ9"}
    mdtrt_id = (await desk.ok("2201", {"data": data}, msgid))["data"]["mdtrt_id"]
    await desk.ok("2601", {"data": {"psn_no": EMPLOYEE.psn_no, "omsgid": msgid, "oinfno": "2201"}})
    line = {
        "feedetl_sn": "1",
        "mdtrt_id": mdtrt_id,
        "psn_no": EMPLOYEE.psn_no,
        "chrg_bchno": "B1",
        "med_list_codg": "ZC0001",
        "det_item_fee_sumamt": "25.00",
        "cnt": "1",
        "pric": "25.00",
    }
    body = await desk.call("2204", {"feedetail": [line]})
    assert body["infcode"] == -1 and "已撤销挂号" in body["err_msg"]


async def test_5203_by_visit_and_by_an_unknown_id(desk: Desk) -> None:
    mdtrt_id = await desk.visit("MZ10")
    await desk.upload(mdtrt_id, "B1", [("ZC0001", "25.00", "1")])
    settled = await desk.settle(mdtrt_id, "B1", "25.00")
    found = await desk.ok("5203", {"data": {"psn_no": EMPLOYEE.psn_no, "mdtrt_id": mdtrt_id}})
    assert found["setlinfo"]["setl_id"] == settled["setl_id"]
    missing = await desk.call("5203", {"data": {"psn_no": EMPLOYEE.psn_no, "setl_id": "NOPE"}})
    assert missing["infcode"] == 0 and missing["output"]["setlinfo"] is None


async def test_http_gateway_checks_the_tif_signature(store: NhsaStore) -> None:
    settings = NhsaSimSettings(paas_token="secret")
    app = build_app(NhsaPlatform(store, settings), settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        assert (await http.post(CALL_SERVICE_PATH, content=b"{}")).status_code == 401
        stamp = str(int(datetime.now(UTC).timestamp()))
        headers = {
            "x-tif-paasid": "p",
            "x-tif-timestamp": stamp,
            "x-tif-nonce": "n1",
            "x-tif-signature": tif_signature(stamp, "secret", "n1"),
        }
        response = await http.post(CALL_SERVICE_PATH, content=b"not json", headers=headers)
        assert response.status_code == 200 and loads(response.content)["infcode"] == -1
        armed = await http.post("/sim/faults", json={"infno": "2207", "mode": "nonsense"})
        assert armed.status_code == 400
        assert (await http.get("/sim/health")).json()["status"] == "ok"


async def test_the_fee_batch_book_shows_what_the_insurer_still_holds(desk: Desk, store: NhsaStore) -> None:
    mdtrt_id = await desk.visit("MZ9")
    await desk.upload(mdtrt_id, "B1", [("ZC0001", "25.00", "1"), ("XY0001", "12.50", "1")])
    await desk.upload(mdtrt_id, "B2", [("XY0001", "12.50", "1")])
    await desk.ok("2205", {"data": {"mdtrt_id": mdtrt_id, "psn_no": EMPLOYEE.psn_no, "chrg_bchno": "B2"}})
    app = build_app(desk.platform, NhsaSimSettings(population=len(PEOPLE)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        held = (await http.get("/sim/fee-batches")).json()
    assert held == [{"mdtrt_id": mdtrt_id, "chrg_bchno": "B1", "lines": 2, "amount_fen": 3750}]
