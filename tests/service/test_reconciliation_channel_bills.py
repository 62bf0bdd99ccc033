"""reconciliation's channel leg through payment-core's public ExportChannelBill: the real payment-core
(its fake WeChat Pay and Alipay channels behind it) and the real reconciliation, each on its own
loopback gRPC server; the platform's own ledger is in memory. Reconciliation holds no merchant key
and reads no channel protocol: every bill it matches came through the contract."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore
from services.payment_core.bootstrap import build as build_payment_core
from services.payment_core.config import PaymentCoreSettings
from services.reconciliation.adapters.in_memory import InMemoryInsurerTotals, InMemoryPlatformLedger
from services.reconciliation.bootstrap import build
from services.reconciliation.config import ReconciliationSettings
from services.reconciliation.domain.model import PlatformTransaction, TransactionKind
from services.runtime.clock import business_date_of, business_day_bounds, utcnow
from services.runtime.money import Money
from services.runtime.server import build_server

# The business day is fixed when the module is collected and every payment is stamped at its noon:
# a suite that runs across Beijing midnight (16:00 UTC) still finds its payments on the day's bill.
DAY = business_date_of(utcnow())
NOON_OF_DAY = business_day_bounds(DAY)[0] + timedelta(hours=12)


@dataclass
class Mesh:
    payment_core: PaymentCore
    port: int
    platform: InMemoryPlatformLedger

    def channel(self, name: str) -> FakeChannel:
        channel = self.payment_core.orders._deps.channels[name]
        assert isinstance(channel, FakeChannel)
        return channel

    async def channel_paid(self, name: str, fen: int) -> str:
        """The patient paid through the channel (what its bill will show)."""
        out_trade_no = f"MP{uuid.uuid4().hex[:20]}"
        expires = utcnow() + timedelta(minutes=15)
        channel = self.channel(name)
        await channel.place_order(out_trade_no, Money(fen), "门诊缴费", "http://notify", expires)
        channel.patient_pays(out_trade_no, at=NOON_OF_DAY)
        return out_trade_no

    def platform_recorded(self, channel: str, out_trade_no: str, fen: int) -> None:
        self.platform.record(DAY, [PlatformTransaction(
            kind=TransactionKind.PAYMENT, order_id=f"ord_{out_trade_no}", channel=channel,
            out_trade_no=out_trade_no, out_refund_no="", amount=Money(fen), status="SUCCEEDED",
        )])  # fmt: skip

    async def reconcile(
        self, tmp_path: Path, page_size: int = 2
    ) -> tuple[pb.ReconciliationRun, list[pb.Discrepancy]]:
        settings = ReconciliationSettings(
            database_url=None, data_dir=tmp_path / "recon", trace_dir=tmp_path / "traces",
            payment_core_port=self.port, reconciliation_export_page_size=page_size,
        )  # fmt: skip
        app = build(settings, platform_ledger=self.platform, insurer_totals=InMemoryInsurerTotals())
        await app.db.migrate()
        server = build_server()
        app.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc:
                stub = reconciliation_pb2_grpc.ReconciliationServiceStub(rpc)
                request = pb.RunReconciliationRequest(
                    request_id=uuid.uuid4().hex, business_date=DAY.isoformat()
                )
                run = (await stub.RunReconciliation(request, timeout=20)).run
                listing = pb.ListDiscrepanciesRequest(run_id=run.run_id, page_size=100)
                found = list((await stub.ListDiscrepancies(listing, timeout=10)).discrepancies)
            return run, found
        finally:
            await server.stop(None)
            await app.close()


async def _mesh(tmp_path: Path, alipay: bool) -> AsyncIterator[Mesh]:
    settings = PaymentCoreSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/payment_core.sqlite3", data_dir=tmp_path / "pc",
        trace_dir=tmp_path / "traces", payment_core_channel="fake", payment_core_alipay=alipay,
    )  # fmt: skip
    core = build_payment_core(settings, insurance=FakeInsurance())
    await core.database.migrate()
    server = build_server()
    core.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Mesh(core, port, InMemoryPlatformLedger())
    await server.stop(None)
    await core.close()


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    async for wired in _mesh(tmp_path, alipay=True):
        yield wired


@pytest.fixture
async def wechat_only(tmp_path: Path) -> AsyncIterator[Mesh]:
    async for wired in _mesh(tmp_path, alipay=False):
        yield wired


def by_key(found: list[pb.Discrepancy]) -> dict[tuple[str, str], int]:
    return {(item.source, item.out_trade_no): item.discrepancy_class for item in found}


async def test_an_alipay_payment_the_platform_lacks_or_holds_at_another_amount_is_a_discrepancy(
    mesh: Mesh, tmp_path: Path
) -> None:
    unknown = await mesh.channel_paid("ALIPAY", 4_500)
    other_amount = await mesh.channel_paid("ALIPAY", 3_000)
    agreed = await mesh.channel_paid("ALIPAY", 1_200)
    mesh.platform_recorded("ALIPAY", other_amount, 3_100)
    mesh.platform_recorded("ALIPAY", agreed, 1_200)

    run, found = await mesh.reconcile(tmp_path)

    assert (run.status, run.matched_count) == (pb.RUN_STATUS_COMPLETED, 1)
    assert by_key(found) == {
        ("alipay", unknown): pb.DISCREPANCY_CLASS_CHANNEL_ONLY,
        ("alipay", other_amount): pb.DISCREPANCY_CLASS_AMOUNT_MISMATCH,
    }
    (mismatch,) = [item for item in found if item.out_trade_no == other_amount]
    assert (mismatch.platform_amount_fen, mismatch.source_amount_fen) == (3_100, 3_000)
    totals = {item.source: item for item in run.totals}
    assert (totals["alipay"].payment_count, totals["alipay"].payment_fen) == (3, 8_700)


async def test_the_wechat_leg_still_finds_long_and_short_money(mesh: Mesh, tmp_path: Path) -> None:
    long_money = await mesh.channel_paid("WECHAT_PAY", 2_000)  # 长款: the channel holds it, we do not
    matched = [await mesh.channel_paid("WECHAT_PAY", 500 + n) for n in range(3)]
    for n, out_trade_no in enumerate(matched):
        mesh.platform_recorded("WECHAT_PAY", out_trade_no, 500 + n)
    short_money = f"MP{uuid.uuid4().hex[:20]}"  # 短款: we recorded it, the channel's bill has no row
    mesh.platform_recorded("WECHAT_PAY", short_money, 9_900)

    run, found = await mesh.reconcile(tmp_path, page_size=2)  # the bill comes in two pages

    assert (run.status, run.matched_count) == (pb.RUN_STATUS_COMPLETED, 3)
    assert by_key(found) == {
        ("wechat_pay", long_money): pb.DISCREPANCY_CLASS_CHANNEL_ONLY,
        ("wechat_pay", short_money): pb.DISCREPANCY_CLASS_PLATFORM_ONLY,
    }


async def test_a_channel_payment_core_does_not_offer_is_not_read(wechat_only: Mesh, tmp_path: Path) -> None:
    paid = await wechat_only.channel_paid("WECHAT_PAY", 800)
    wechat_only.platform_recorded("WECHAT_PAY", paid, 800)

    run, found = await wechat_only.reconcile(tmp_path)

    assert (run.status, run.matched_count, found) == (pb.RUN_STATUS_COMPLETED, 1, [])
    assert "alipay" not in {item.source for item in run.totals}


async def test_a_channel_that_cannot_give_its_bill_fails_the_run_with_the_reason(
    mesh: Mesh, tmp_path: Path
) -> None:
    mesh.channel("ALIPAY").fail_bill_downloads(ports.ChannelUnavailable("gateway unreachable"))

    run, _ = await mesh.reconcile(tmp_path)

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.failure_reason.startswith("alipay: payment-core ExportChannelBill UNAVAILABLE")
    assert [item.source for item in run.totals] == ["platform"]
