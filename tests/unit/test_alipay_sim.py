"""The Alipay simulator driven by the unmodified python-alipay-sdk client.

The SDK is synchronous (urllib `urlopen`, a GET of the signed query string), so every call runs in
a worker thread through `asyncio.to_thread` while the simulator (uvicorn) and the merchant's notify
endpoint serve in this test's event loop, on ephemeral loopback ports.
"""

from __future__ import annotations

import asyncio
import io
import socket
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from alipay import AliPay
from alipay.exceptions import AliPayValidationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.alipay.app import build_asgi_app
from infra.simulators.alipay.faults import validate
from infra.simulators.alipay.keys import AlipayKeyPaths, ensure_keys, read_text
from infra.simulators.alipay.money import fen_of, yuan
from infra.simulators.alipay.simulator import AlipaySimulator, SimulatorConfig

BEIJING = ZoneInfo("Asia/Shanghai")


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Inbox:
    """The merchant's notify endpoint: answers `success`, or `fail` while it owes failures."""

    received: list[dict[str, str]] = field(default_factory=list)
    failures_to_give: int = 0

    async def endpoint(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        self.received.append(form)
        if self.failures_to_give > 0:
            self.failures_to_give -= 1
            return PlainTextResponse("fail")
        return PlainTextResponse("success")

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[dict[str, str]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.received) < count:
            assert asyncio.get_running_loop().time() < deadline, f"only {len(self.received)} notifications"
            await asyncio.sleep(0.01)
        return self.received


@dataclass
class World:
    sim_url: str
    notify_url: str
    inbox: Inbox
    keys: AlipayKeyPaths
    control: httpx.AsyncClient

    def sdk(self, app_private_key: str | None = None, alipay_public_key: str | None = None) -> AliPay:
        client = AliPay(
            appid=read_text(self.keys.app_id),
            app_notify_url=self.notify_url,
            app_private_key_string=app_private_key or self.keys.app_private_key.read_text(),
            alipay_public_key_string=alipay_public_key or self.keys.alipay_public_key.read_text(),
            sign_type="RSA2",
        )
        client._gateway = f"{self.sim_url}/gateway.do"  # the SDK has no gateway parameter
        return client

    async def arm(self, operation: str, mode: str, delay_s: float = 1.0) -> None:
        fault = {"operation": operation, "mode": mode, "delay_s": delay_s}
        assert (await self.control.post("/sim/faults", json=fault)).status_code == 201


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = SimulatorConfig(tmp_path / "keys", tmp_path / "alipay_sim.sqlite3", time_scale=0.0001)
    inbox = Inbox()
    receiver = Starlette(routes=[Route("/notify", inbox.endpoint, methods=["POST"])])
    async with serving(build_asgi_app(AlipaySimulator(config))) as sim_url, serving(receiver) as inbox_url:
        async with httpx.AsyncClient(base_url=sim_url) as control:
            yield World(sim_url, f"{inbox_url}/notify", inbox, AlipayKeyPaths(config.key_dir), control)


def new_no(prefix: str = "MP") -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def paid_trade(world: World, sdk: AliPay, total: str = "125.00") -> dict[str, Any]:
    answer = await call(
        sdk.api_alipay_trade_pay, new_no(), "bar_code", "286412345678901234", "门诊缴费", total_amount=total
    )
    assert answer["code"] == "10000", answer
    return dict(answer)


def test_yuan_and_fen_convert_exactly() -> None:
    assert [fen_of(v) for v in ("125.00", "0.01", "100", 0.1, "1.005", "abc", True)] == [
        12_500, 1, 10_000, 10, None, None, None,
    ]  # fmt: skip
    assert (yuan(12_500), yuan(-5_000), yuan(7)) == ("125.00", "-50.00", "0.07")


def test_faults_are_checked_before_they_are_armed() -> None:
    assert validate("pay", "user_paying", 1, 1.0) is None
    assert validate("refund", "processing", 1, 1.0) is None
    assert validate("refund", "not_enough", 1, 1.0) is None
    assert validate("query", "user_paying", 1, 1.0) is not None
    assert validate("pay_notify", "late", 1, 1.0) is None
    assert validate("teleport", "lost", 1, 1.0) is not None


def test_keys_are_made_once(tmp_path: Path) -> None:
    first = ensure_keys(tmp_path / "k").app_private_key.read_text()
    assert ensure_keys(tmp_path / "k").app_private_key.read_text() == first


async def test_precreate_is_idempotent_and_refuses_another_amount(world: World) -> None:
    sdk, out_trade_no = world.sdk(), new_no()
    placed = await call(sdk.api_alipay_trade_precreate, "门诊缴费-西药费", out_trade_no, "125.00")
    assert placed["code"] == "10000" and placed["qr_code"].startswith("https://qr.alipay.com/")
    again = await call(sdk.api_alipay_trade_precreate, "门诊缴费-西药费", out_trade_no, "125.00")
    assert again["qr_code"] == placed["qr_code"]
    other = await call(sdk.api_alipay_trade_precreate, "门诊缴费-西药费", out_trade_no, "126.00")
    assert (other["code"], other["sub_code"]) == ("40004", "ACQ.CONTEXT_INCONSISTENT")
    queried = await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no)
    assert (queried["trade_status"], queried["total_amount"]) == ("WAIT_BUYER_PAY", "125.00")


async def test_an_unknown_trade_does_not_exist(world: World) -> None:
    answer = await call(world.sdk().api_alipay_trade_query, out_trade_no=new_no())
    assert (answer["code"], answer["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")


async def test_a_scanned_payment_is_notified_signed_until_success(world: World) -> None:
    sdk, out_trade_no = world.sdk(), new_no()
    await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
    world.inbox.failures_to_give = 2
    assert (await world.control.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 200
    forms = await world.inbox.wait_for(3)
    assert all(form == {**forms[0], "notify_time": form["notify_time"]} for form in forms)
    form = dict(forms[2])
    assert (form["trade_status"], form["total_amount"], form["out_trade_no"]) == (
        "TRADE_SUCCESS",
        "20.00",
        out_trade_no,
    )
    signature = form.pop("sign")
    assert sdk.verify(dict(form), signature)
    assert not sdk.verify({**form, "total_amount": "0.01"}, signature)
    attempts = (await world.control.get("/sim/notifications", params={"out_trade_no": out_trade_no})).json()
    assert [(a["attempt"], a["answer"], a["acknowledged"]) for a in attempts] == [
        (1, "fail", False),
        (2, "fail", False),
        (3, "success", True),
    ]
    queried = await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no)
    assert queried["trade_status"] == "TRADE_SUCCESS" and queried["trade_no"] == form["trade_no"]


async def test_a_bar_code_payment_the_patient_confirms_later(world: World) -> None:
    sdk, out_trade_no = world.sdk(), new_no()
    await world.arm("pay", "user_paying")
    paying = await call(
        sdk.api_alipay_trade_pay,
        out_trade_no,
        "bar_code",
        "286412345678901234",
        "门诊缴费",
        total_amount="88.00",
    )
    assert paying["code"] == "10003" and paying["trade_no"]
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no))[
        "trade_status"
    ] == "WAIT_BUYER_PAY"
    await world.control.post("/sim/pay", json={"out_trade_no": out_trade_no})
    done = await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no)
    assert (done["trade_status"], done["trade_no"]) == ("TRADE_SUCCESS", paying["trade_no"])
    assert done["send_pay_date"]
    bad = await call(sdk.api_alipay_trade_pay, new_no(), "bar_code", "123", "门诊缴费", total_amount="1.00")
    assert bad["sub_code"] == "ACQ.PAYMENT_AUTH_CODE_INVALID"


async def test_partial_refunds_keyed_by_out_request_no(world: World) -> None:
    sdk = world.sdk()
    trade = await paid_trade(world, sdk)
    out_trade_no, first = trade["out_trade_no"], new_no("RF")
    refund = await call(
        sdk.api_alipay_trade_refund,
        "50.00",
        out_trade_no=out_trade_no,
        out_request_no=first,
        refund_reason="退药",
    )
    assert (refund["code"], refund["fund_change"], refund["refund_fee"]) == ("10000", "Y", "50.00")
    replay = await call(sdk.api_alipay_trade_refund, "50.00", out_trade_no=out_trade_no, out_request_no=first)
    assert (replay["fund_change"], replay["refund_fee"]) == ("N", "50.00")
    too_much = await call(
        sdk.api_alipay_trade_refund, "75.01", out_trade_no=out_trade_no, out_request_no=new_no()
    )
    assert (too_much["code"], too_much["sub_code"]) == ("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
    queried = await call(sdk.api_alipay_trade_fastpay_refund_query, first, out_trade_no=out_trade_no)
    assert (queried["refund_status"], queried["refund_amount"], queried["out_request_no"]) == (
        "REFUND_SUCCESS",
        "50.00",
        first,
    )
    unknown = await call(sdk.api_alipay_trade_fastpay_refund_query, new_no(), out_trade_no=out_trade_no)
    assert unknown["code"] == "10000" and "refund_status" not in unknown and "refund_amount" not in unknown
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no))[
        "trade_status"
    ] == "TRADE_SUCCESS"
    rest = await call(
        sdk.api_alipay_trade_refund, "75.00", out_trade_no=out_trade_no, out_request_no=new_no()
    )
    assert rest["refund_fee"] == "125.00"
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no))[
        "trade_status"
    ] == "TRADE_CLOSED"
    notices = [form for form in await world.inbox.wait_for(3) if form.get("out_biz_no") == first]
    assert [(n["refund_fee"], n["trade_status"]) for n in notices] == [("50.00", "TRADE_SUCCESS")]
    # The book an operator (or the chaos test) reads: the trade in Alipay's state, both refunds.
    book = {t["out_trade_no"]: t for t in (await world.control.get("/sim/transactions")).json()}
    assert book[out_trade_no]["trade_status"] == "TRADE_CLOSED"
    assert book[out_trade_no]["total_fen"] == 12_500
    assert sorted(r["refund_fen"] for r in book[out_trade_no]["refunds"]) == [5_000, 7_500]


async def test_a_refund_in_progress_finishes_later(world: World) -> None:
    sdk = world.sdk()
    out_trade_no, out_request_no = (await paid_trade(world, sdk))["out_trade_no"], new_no("RF")
    await world.arm("refund", "processing")
    answer = await call(
        sdk.api_alipay_trade_refund, "10.00", out_trade_no=out_trade_no, out_request_no=out_request_no
    )
    assert answer["fund_change"] == "N"
    pending = await call(sdk.api_alipay_trade_fastpay_refund_query, out_request_no, out_trade_no=out_trade_no)
    assert pending["refund_amount"] == "10.00" and "refund_status" not in pending
    body = {"out_trade_no": out_trade_no, "out_request_no": out_request_no}
    assert (await world.control.post("/sim/refunds/finish", json=body)).status_code == 200
    done = await call(sdk.api_alipay_trade_fastpay_refund_query, out_request_no, out_trade_no=out_trade_no)
    assert done["refund_status"] == "REFUND_SUCCESS"


async def test_a_refund_under_not_enough_is_not_made_until_the_fault_is_cleared(world: World) -> None:
    sdk = world.sdk()
    out_trade_no, out_request_no = (await paid_trade(world, sdk))["out_trade_no"], new_no("RF")
    fault = {"operation": "refund", "mode": "not_enough", "count": 100}
    assert (await world.control.post("/sim/faults", json=fault)).status_code == 201
    for _ in range(2):  # the same request, refused each time: nothing was refunded
        answer = await call(
            sdk.api_alipay_trade_refund, "10.00", out_trade_no=out_trade_no, out_request_no=out_request_no
        )
        assert (answer["code"], answer["sub_code"]) == ("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH")
    unknown = await call(sdk.api_alipay_trade_fastpay_refund_query, out_request_no, out_trade_no=out_trade_no)
    assert "refund_amount" not in unknown and "refund_status" not in unknown
    assert [f["remaining"] for f in (await world.control.get("/sim/faults")).json()] == [98]
    assert (await world.control.delete("/sim/faults")).status_code == 204  # the balance is topped up
    answer = await call(
        sdk.api_alipay_trade_refund, "10.00", out_trade_no=out_trade_no, out_request_no=out_request_no
    )
    assert (answer["code"], answer["fund_change"]) == ("10000", "Y")


async def test_close_and_cancel(world: World) -> None:
    sdk, unpaid = world.sdk(), new_no()
    await call(sdk.api_alipay_trade_precreate, "挂号费", unpaid, "20.00")
    assert (await call(sdk.api_alipay_trade_close, out_trade_no=unpaid))["code"] == "10000"
    again = await call(sdk.api_alipay_trade_close, out_trade_no=unpaid)
    assert again["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    reopened = await call(sdk.api_alipay_trade_precreate, "挂号费", unpaid, "20.00")
    assert reopened["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
    refund = await call(sdk.api_alipay_trade_refund, "1.00", out_trade_no=unpaid)
    assert refund["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
    paid = (await paid_trade(world, sdk))["out_trade_no"]
    assert (await call(sdk.api_alipay_trade_close, out_trade_no=paid))["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    cancelled = await call(sdk.api_alipay_trade_cancel, out_trade_no=paid)
    assert (cancelled["action"], cancelled["retry_flag"]) == ("refund", "N")
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=paid))["trade_status"] == "TRADE_CLOSED"


async def test_signatures_both_ways(world: World) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        other.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    forged = await call(world.sdk(app_private_key=private_pem).api_alipay_trade_query, out_trade_no=new_no())
    assert (forged["code"], forged["sub_code"]) == ("40002", "isv.invalid-signature")
    with pytest.raises(AliPayValidationError):
        await call(world.sdk(alipay_public_key=public_pem).api_alipay_trade_query, out_trade_no=new_no())


async def test_request_faults(world: World) -> None:
    sdk, out_trade_no = world.sdk(), new_no()
    await world.arm("precreate", "http_500")
    with pytest.raises(urllib.error.HTTPError):
        await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no))[
        "sub_code"
    ] == "ACQ.TRADE_NOT_EXIST"
    await world.arm("precreate", "timeout", delay_s=1.0)
    url = f"{world.sim_url}/gateway.do?" + sdk.sign_data(
        sdk.build_body(
            "alipay.trade.precreate",
            {"out_trade_no": out_trade_no, "total_amount": "20.00", "subject": "挂号"},
        )
    )
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        await call(lambda: urllib.request.urlopen(url, timeout=0.3).read())
    assert (await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no))[
        "trade_status"
    ] == "WAIT_BUYER_PAY"


async def test_notification_faults(world: World) -> None:
    sdk, lost, doubled = world.sdk(), new_no(), new_no()
    for out_trade_no in (lost, doubled):
        await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
    await world.arm("pay_notify", "lost")
    await world.control.post("/sim/pay", json={"out_trade_no": lost})
    await world.arm("pay_notify", "duplicate")
    await world.control.post("/sim/pay", json={"out_trade_no": doubled})
    first, second = await world.inbox.wait_for(2)
    assert first["out_trade_no"] == second["out_trade_no"] == doubled
    assert first["notify_id"] == second["notify_id"]
    assert not [form for form in world.inbox.received if form["out_trade_no"] == lost]


async def test_a_late_notification_comes_after_its_delay(world: World) -> None:
    sdk, out_trade_no = world.sdk(), new_no()
    await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
    await world.arm("pay_notify", "late", delay_s=0.5)
    await world.control.post("/sim/pay", json={"out_trade_no": out_trade_no})
    await asyncio.sleep(0.2)
    assert world.inbox.received == []
    (form,) = await world.inbox.wait_for(1)
    assert form["out_trade_no"] == out_trade_no


async def test_a_precreated_trade_can_stay_unknown_until_the_patient_scans(tmp_path: Path) -> None:
    config = SimulatorConfig(tmp_path / "keys", tmp_path / "sim.sqlite3", trade_created_on_scan=True)
    async with serving(build_asgi_app(AlipaySimulator(config))) as sim_url:
        async with httpx.AsyncClient(base_url=sim_url) as control:
            world = World(sim_url, "", Inbox(), AlipayKeyPaths(config.key_dir), control)
            sdk, out_trade_no = world.sdk(), new_no()
            placed = await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
            again = await call(sdk.api_alipay_trade_precreate, "挂号费", out_trade_no, "20.00")
            assert placed["qr_code"] == again["qr_code"]
            for unknown in (
                await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no),
                await call(sdk.api_alipay_trade_close, out_trade_no=out_trade_no),
            ):
                assert unknown["sub_code"] == "ACQ.TRADE_NOT_EXIST"
            assert (await control.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 200
            paid = await call(sdk.api_alipay_trade_query, out_trade_no=out_trade_no)
            assert paid["trade_status"] == "TRADE_SUCCESS"


async def test_the_trade_bill_is_a_zip_of_gbk_csvs(world: World) -> None:
    sdk = world.sdk()
    trade = await paid_trade(world, sdk)
    out_request_no = new_no("RF")
    await call(
        sdk.api_alipay_trade_refund,
        "25.00",
        out_trade_no=trade["out_trade_no"],
        out_request_no=out_request_no,
    )
    today = datetime.now(BEIJING).date().isoformat()
    answer = await call(
        sdk.server_api,
        "alipay.data.dataservice.bill.downloadurl.query",
        biz_content={"bill_type": "trade", "bill_date": today},
    )
    assert answer["code"] == "10000"
    content = (await world.control.get(answer["bill_download_url"])).content
    archive = zipfile.ZipFile(io.BytesIO(content))
    detail_name = next(name for name in archive.namelist() if name.endswith("_业务明细.csv"))
    assert any(name.endswith("_业务明细(汇总).csv") for name in archive.namelist())
    lines = archive.read(detail_name).decode("gbk").splitlines()
    assert lines[0] == "#支付宝业务明细查询" and lines[4].startswith("支付宝交易号,商户订单号,业务类型")
    mine = [line.split(",") for line in lines[5:] if trade["out_trade_no"] in line]
    assert [(cells[1], cells[2], cells[11], cells[21]) for cells in mine] == [
        (f"{trade['out_trade_no']}\t", "交易\t", "125.00", ""),
        (f"{trade['out_trade_no']}\t", "退款\t", "-25.00", f"{out_request_no}\t"),
    ]
    assert (await world.control.get(answer["bill_download_url"])).status_code == 404  # one-time URL
    empty = await call(
        sdk.server_api,
        "alipay.data.dataservice.bill.downloadurl.query",
        biz_content={"bill_type": "trade", "bill_date": "2001-01-01"},
    )
    assert (empty["code"], empty["sub_code"]) == ("40004", "isp.bill_not_exist")
