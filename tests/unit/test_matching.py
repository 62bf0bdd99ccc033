"""The reconciliation matcher: every discrepancy class, and what does not count as one."""

from __future__ import annotations

from datetime import date

from services.reconciliation.domain.matching import (
    check_insurer_statement,
    insured_types,
    match_channel,
    reconcile_day,
)
from services.reconciliation.domain.model import (
    ChannelBill,
    ChannelBillLine,
    Discrepancy,
    DiscrepancyClass,
    InsurerFigures,
    InsurerStatement,
    PlatformTransaction,
    TransactionKind,
)
from services.runtime.money import Money

DAY = date(2025, 3, 14)
WECHAT = "wechat_pay"


def payment(
    out_trade_no: str,
    amount_fen: int = 12_500,
    status: str = "SUCCEEDED",
    channel: str = "WECHAT_PAY",
    insutype: str = "",
) -> PlatformTransaction:
    """An insured payment carries its settlement: medfee 250.00, fund 150.00, account 25.00."""
    settled = bool(insutype)
    return PlatformTransaction(
        kind=TransactionKind.PAYMENT, order_id=f"ord-{out_trade_no}", channel=channel,
        out_trade_no=out_trade_no, out_refund_no="", amount=Money(amount_fen), status=status,
        insutype=insutype, setl_id=f"S-{out_trade_no}" if settled else "",
        medfee=Money(25_000 if settled else 0), fund=Money(15_000 if settled else 0),
        personal_account=Money(2_500 if settled else 0),
    )  # fmt: skip


def refund(
    out_refund_no: str, out_trade_no: str, amount_fen: int = 12_500, status: str = "SUCCEEDED"
) -> PlatformTransaction:
    return PlatformTransaction(
        kind=TransactionKind.REFUND, order_id=f"ord-{out_trade_no}", channel="WECHAT_PAY",
        out_trade_no=out_trade_no, out_refund_no=out_refund_no, amount=Money(amount_fen), status=status,
    )  # fmt: skip


def paid_row(out_trade_no: str, amount_fen: int = 12_500, status: str = "SUCCEEDED") -> ChannelBillLine:
    return ChannelBillLine(
        kind=TransactionKind.PAYMENT, out_trade_no=out_trade_no, out_refund_no="",
        channel_transaction_id=f"4200{out_trade_no}", channel_refund_id="", status=status,
        amount=Money(amount_fen), traded_at="2025-03-14 09:12:31",
    )  # fmt: skip


def refund_row(
    out_refund_no: str, out_trade_no: str, amount_fen: int = 12_500, status: str = "SUCCEEDED"
) -> ChannelBillLine:
    return ChannelBillLine(
        kind=TransactionKind.REFUND, out_trade_no=out_trade_no, out_refund_no=out_refund_no,
        channel_transaction_id=f"4200{out_trade_no}", channel_refund_id=f"5030{out_refund_no}",
        status=status, amount=Money(amount_fen), traded_at="2025-03-14 15:40:02",
    )  # fmt: skip


def statement(
    insutype: str = "310", balanced: bool = True, reported_fund_fen: int | None = None
) -> InsurerStatement:
    declared = InsurerFigures(Money(25_000), Money(15_000), Money(2_500), 1)  # one insured payment
    reported = None
    if reported_fund_fen is not None:
        reported = InsurerFigures(Money(24_000), Money(reported_fund_fen), Money(2_500), 1)
    return InsurerStatement(
        insutype=insutype, clr_type="11", balanced=balanced, result_code="0" if balanced else "1",
        result_text="平" if balanced else "不平", declared=declared, reported=reported,
    )  # fmt: skip


def classes(found: tuple[Discrepancy, ...]) -> list[DiscrepancyClass]:
    return [item.discrepancy_class for item in found]


def test_a_clean_day_matches_every_payment_and_refund() -> None:
    platform = [payment("T1"), payment("T2", 800), refund("R1", "T1")]
    bill = [paid_row("T1"), paid_row("T2", 800), refund_row("R1", "T1")]

    outcome = match_channel(platform, bill, WECHAT)

    assert outcome.matched_count == 3
    assert outcome.discrepancies == ()


def test_money_on_the_channel_only_is_long_money() -> None:
    outcome = match_channel([], [paid_row("T9", 3_000)], WECHAT)

    (found,) = outcome.discrepancies
    assert found.discrepancy_class is DiscrepancyClass.CHANNEL_ONLY
    assert (found.out_trade_no, found.source_amount, found.platform_amount) == ("T9", Money(3_000), Money(0))
    assert "no payment with out_trade_no T9" in found.evidence


def test_money_on_the_platform_only_is_short_money() -> None:
    outcome = match_channel([payment("T8", 4_200)], [], WECHAT)

    (found,) = outcome.discrepancies
    assert found.discrepancy_class is DiscrepancyClass.PLATFORM_ONLY
    assert (found.order_id, found.platform_amount) == ("ord-T8", Money(4_200))


def test_different_amounts_are_an_amount_mismatch() -> None:
    outcome = match_channel([payment("T1", 12_500)], [paid_row("T1", 12_400)], WECHAT)

    (found,) = outcome.discrepancies
    assert found.discrepancy_class is DiscrepancyClass.AMOUNT_MISMATCH
    assert (found.platform_amount, found.source_amount) == (Money(12_500), Money(12_400))
    assert "¥125.00" in found.evidence and "¥124.00" in found.evidence
    assert outcome.matched_count == 0


def test_paid_on_the_channel_but_unknown_on_the_platform_is_a_status_mismatch() -> None:
    outcome = match_channel([payment("T1", status="UNKNOWN")], [paid_row("T1")], WECHAT)

    assert classes(outcome.discrepancies) == [DiscrepancyClass.STATUS_MISMATCH]


def test_a_refund_on_one_side_only_is_a_status_mismatch_either_way() -> None:
    platform_side = match_channel([payment("T1"), refund("R1", "T1")], [paid_row("T1")], WECHAT)
    channel_side = match_channel([payment("T2")], [paid_row("T2"), refund_row("R2", "T2")], WECHAT)

    assert classes(platform_side.discrepancies) == [DiscrepancyClass.STATUS_MISMATCH]
    assert platform_side.discrepancies[0].out_refund_no == "R1"
    assert classes(channel_side.discrepancies) == [DiscrepancyClass.STATUS_MISMATCH]
    assert (platform_side.matched_count, channel_side.matched_count) == (1, 1)


def test_a_refund_still_processing_on_the_channel_is_a_status_mismatch() -> None:
    outcome = match_channel([refund("R1", "T1")], [refund_row("R1", "T1", status="PROCESSING")], WECHAT)

    assert classes(outcome.discrepancies) == [DiscrepancyClass.STATUS_MISMATCH]


def test_a_doubled_bill_row_is_one_duplicate_and_the_payment_still_matches() -> None:
    outcome = match_channel([payment("T1")], [paid_row("T1"), paid_row("T1")], WECHAT)

    (found,) = outcome.discrepancies
    assert found.discrepancy_class is DiscrepancyClass.DUPLICATE
    assert (found.source, found.source_amount) == (WECHAT, Money(25_000))
    assert "2 times" in found.evidence
    assert outcome.matched_count == 1


def test_a_doubled_platform_record_is_a_duplicate_of_the_platform() -> None:
    outcome = match_channel([payment("T1"), payment("T1")], [paid_row("T1")], WECHAT)

    (found,) = outcome.discrepancies
    assert (found.discrepancy_class, found.source) == (DiscrepancyClass.DUPLICATE, "platform")


def test_payments_that_never_moved_money_are_not_discrepancies() -> None:
    platform = [payment("T1", status="CLOSED"), payment("T2", status="FAILED")]

    outcome = match_channel(platform, [paid_row("T3", status="REVOKED")], WECHAT)

    assert outcome.discrepancies == ()
    assert outcome.matched_count == 0


def test_a_revoked_barcode_payment_the_platform_counts_as_paid_is_a_status_mismatch() -> None:
    outcome = match_channel([payment("T1")], [paid_row("T1", status="REVOKED")], WECHAT)

    assert classes(outcome.discrepancies) == [DiscrepancyClass.STATUS_MISMATCH]


def test_an_unbalanced_3201_is_an_insurer_totals_mismatch_with_both_figures() -> None:
    found = check_insurer_statement(statement("390", balanced=False, reported_fund_fen=28_000))

    assert found is not None
    assert found.discrepancy_class is DiscrepancyClass.INSURER_TOTALS_MISMATCH
    assert found.source == "insurer:390"
    assert (found.platform_amount, found.source_amount) == (Money(25_000), Money(24_000))
    assert "不平" in found.evidence and "fund ¥280.00" in found.evidence
    assert check_insurer_statement(statement("310")) is None


def test_a_day_matches_only_its_channel_and_totals_every_source() -> None:
    platform = [payment("T1"), payment("C1", 900, channel="CASH"), payment("T2", 600, insutype="310")]
    bill = ChannelBill(WECHAT, "WECHAT_PAY", DAY, (paid_row("T1"), paid_row("T2", 600)))

    outcome = reconcile_day(platform, [bill], [statement("310")])

    assert (outcome.matched_count, outcome.discrepancies) == (2, ())
    totals = {item.source: item for item in outcome.totals}
    assert list(totals) == ["platform", "platform:wechat_pay", "wechat_pay", "insurer:310"]
    assert (totals["platform"].payment_count, totals["platform"].payment) == (3, Money(14_000))
    assert totals["platform:wechat_pay"].payment == totals["wechat_pay"].payment == Money(13_100)
    assert (totals["insurer:310"].payment_count, totals["insurer:310"].payment) == (1, Money(17_500))


def test_each_insurance_type_on_the_day_gets_one_3201() -> None:
    platform = [payment("T1", insutype="390"), payment("T2", insutype="310"), payment("T3", insutype="390")]

    assert insured_types([*platform, payment("T4")]) == ["310", "390"]


def test_a_settlement_only_the_platform_holds_is_an_insurer_totals_mismatch() -> None:
    """The 3201 balances (insurance-adapter and the insurer agree), yet payment-core settled one
    more 310 order that day: the third leg finds it."""
    platform = [payment("T2", 600, insutype="310"), payment("T3", 700, insutype="310")]

    found = check_insurer_statement(statement("310"), platform)

    assert found is not None and found.discrepancy_class is DiscrepancyClass.INSURER_TOTALS_MISMATCH
    assert "payment-core holds 2 settlements" in found.evidence
    assert check_insurer_statement(statement("310"), platform[:1]) is None


def test_a_revoked_settlement_counts_against_the_day_like_3201_does() -> None:
    settled = [payment("T2", 600, insutype="310"), payment("T3", 700, insutype="310")]
    revoked = PlatformTransaction(
        kind=TransactionKind.REFUND, order_id="ord-T3", channel="WECHAT_PAY", out_trade_no="T3",
        out_refund_no="R3", amount=Money(700), status="SUCCEEDED", insutype="310", setl_id="S-T3",
        medfee=Money(25_000), fund=Money(15_000), personal_account=Money(2_500),
    )  # fmt: skip

    assert check_insurer_statement(statement("310"), [*settled, revoked]) is None


def test_each_channel_is_matched_against_its_own_bill_only() -> None:
    """An Alipay payment is not looked for in the WeChat bill, nor a WeChat one in Alipay's."""
    platform = [payment("W1"), payment("A1", 3_000, channel="ALIPAY"), payment("A2", 700, channel="ALIPAY")]
    wechat = ChannelBill(WECHAT, "WECHAT_PAY", DAY, (paid_row("W1"),))
    alipay = ChannelBill("alipay", "ALIPAY", DAY, (paid_row("A1", 3_100), paid_row("A9", 450)))

    outcome = reconcile_day(platform, [wechat, alipay], [])

    found = {(item.source, item.out_trade_no): item.discrepancy_class for item in outcome.discrepancies}
    assert found == {
        ("alipay", "A1"): DiscrepancyClass.AMOUNT_MISMATCH,
        ("alipay", "A2"): DiscrepancyClass.PLATFORM_ONLY,
        ("alipay", "A9"): DiscrepancyClass.CHANNEL_ONLY,
    }
    assert outcome.matched_count == 1
    totals = [item.source for item in outcome.totals]
    assert totals == ["platform", "platform:wechat_pay", "wechat_pay", "platform:alipay", "alipay"]
