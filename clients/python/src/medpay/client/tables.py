"""Rich tables for operators (the `medpay` CLI and the local demo). Display only: amounts are
formatted from integer fen to yuan here and nowhere else; patients appear by HIS id and the masked
certificate the platform returns, never by name or clear number."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.table import Table

from medpay.client.models import QUANTITY_SCALE, format_yuan
from medpay.common.v1 import common_pb2
from medpay.data.v1 import data_pb2
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")


def local_time(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=HOSPITAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


def order_status(order: payment_pb2.PaymentOrder) -> str:
    return payment_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")


def order_table(order: payment_pb2.PaymentOrder) -> Table:
    table = Table(title=f"Order {order.order_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    split = order.split
    rows = [
        ("HIS bill", order.his_order_no),
        (
            "status",
            order_status(order) + (f" ({escape(order.attention_reason)})" if order.attention_reason else ""),
        ),
        ("scene", payment_pb2.Scene.Name(order.scene).removeprefix("SCENE_")),
        ("campus / dept", f"{order.campus_code} / {order.dept_code}"),
        ("patient", f"{order.patient.his_patient_id} {order.patient.masked_cert_no}".strip()),
        ("insurance", f"{order.insutype} med_type {order.med_type}" if order.insured else "self-pay"),
        ("total", format_yuan(order.total_fen)),
        ("fund / account", f"{format_yuan(split.fund_pay_sumamt_fen)} / {format_yuan(split.acct_pay_fen)}"),
        ("cash due / paid", f"{format_yuan(order.cash_due_fen)} / {format_yuan(order.cash_paid_fen)}"),
        ("cash refunded", format_yuan(order.refunded_cash_fen)),
        ("setl_id", order.setl_id),
        ("created / settled", f"{local_time(order.created_at)} / {local_time(order.settled_at)}"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


def order_progress(order: payment_pb2.PaymentOrder) -> str:
    """One line per change an operator watches go by: status, cash, the latest payment and refund."""
    parts = [
        f"{order_status(order):<16}",
        f"cash {format_yuan(order.cash_paid_fen)} of {format_yuan(order.cash_due_fen)}",
    ]
    if order.payments:
        status = payment_pb2.PaymentStatus.Name(order.payments[-1].status)
        parts.append(f"payment {status.removeprefix('PAYMENT_STATUS_')}")
    if order.refunds:
        status = payment_pb2.RefundStatus.Name(order.refunds[-1].status)
        parts.append(f"refund {status.removeprefix('REFUND_STATUS_')}")
    if order.attention_reason:
        parts.append(f"({escape(order.attention_reason)})")
    return "  ".join(parts)


def quantity(item: common_pb2.ChargeItem) -> str:
    """Ten-thousandths of a unit, shown as a plain decimal: 15000 -> "1.5"."""
    return f"{(Decimal(item.quantity_ten_thousandths) / QUANTITY_SCALE).normalize():f}"


def items_table(items: Iterable[common_pb2.ChargeItem]) -> Table:
    table = Table(title="Charge items")
    for column in ("#", "code", "national code", "name", "grade", "qty", "unit price", "line total"):
        table.add_column(column, justify="right" if column in ("qty", "unit price", "line total") else "left")
    for item in items:
        table.add_row(
            item.line_no,
            item.hospital_code,
            item.national_code,
            escape(item.name),
            item.chrgitm_lv,
            quantity(item),
            format_yuan(item.unit_price_fen),
            format_yuan(item.line_total_fen),
        )
    return table


def payments_table(payments: Iterable[payment_pb2.Payment]) -> Table:
    table = Table(title="Payments")
    for column in ("payment", "channel", "method", "status", "amount", "refunded", "out_trade_no"):
        table.add_column(column, justify="right" if column in ("amount", "refunded") else "left")
    for payment in payments:
        table.add_row(
            payment.payment_id,
            payment_pb2.Channel.Name(payment.channel).removeprefix("CHANNEL_"),
            payment_pb2.PayMethod.Name(payment.method).removeprefix("PAY_METHOD_"),
            payment_pb2.PaymentStatus.Name(payment.status).removeprefix("PAYMENT_STATUS_"),
            format_yuan(payment.amount_fen),
            format_yuan(payment.refunded_fen),
            payment.out_trade_no,
        )
    return table


def refunds_table(refunds: Iterable[payment_pb2.Refund]) -> Table:
    table = Table(title="Refunds")
    for column in ("refund", "status", "cash", "fund", "account", "reason"):
        table.add_column(column, justify="right" if column in ("cash", "fund", "account") else "left")
    for refund in refunds:
        table.add_row(
            refund.refund_id,
            payment_pb2.RefundStatus.Name(refund.status).removeprefix("REFUND_STATUS_"),
            format_yuan(refund.cash_fen),
            format_yuan(refund.fund_fen),
            format_yuan(refund.personal_account_fen),
            escape(refund.reason),
        )
    return table


def orders_table(orders: Iterable[payment_pb2.PaymentOrder], title: str) -> Table:
    table = Table(title=title)
    for column in ("order", "HIS bill", "status", "insured", "total", "cash due", "created"):
        table.add_column(column, justify="right" if column in ("total", "cash due") else "left")
    for order in orders:
        table.add_row(
            order.order_id,
            order.his_order_no,
            order_status(order),
            order.insutype if order.insured else "-",
            format_yuan(order.total_fen),
            format_yuan(order.cash_due_fen),
            local_time(order.created_at),
        )
    return table


def run_table(run: reconciliation_pb2.ReconciliationRun) -> Table:
    status = reconciliation_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_")
    failure = f" ({escape(run.failure_reason)})" if run.failure_reason else ""
    table = Table(
        title=f"Reconciliation {run.business_date}: {status}{failure} - "
        f"{run.matched_count} matched, {run.discrepancy_count} discrepancies ({run.run_id})"
    )
    for column in ("source", "payments", "payment total", "refunds", "refund total"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for totals in run.totals:
        table.add_row(
            totals.source,
            str(totals.payment_count),
            format_yuan(totals.payment_fen),
            str(totals.refund_count),
            format_yuan(totals.refund_fen),
        )
    return table


def discrepancy_class_name(value: reconciliation_pb2.DiscrepancyClass.ValueType) -> str:
    return reconciliation_pb2.DiscrepancyClass.Name(value).removeprefix("DISCREPANCY_CLASS_")


def discrepancy_counts_table(discrepancies: Iterable[reconciliation_pb2.Discrepancy]) -> Table:
    counts = Counter(discrepancy_class_name(d.discrepancy_class) for d in discrepancies)
    table = Table(title="Discrepancies by class")
    table.add_column("class")
    table.add_column("count", justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(name, str(count))
    return table


def discrepancies_table(discrepancies: Iterable[reconciliation_pb2.Discrepancy], run_id: str) -> Table:
    table = Table(title=f"Discrepancies of {run_id}")
    columns = ("class", "status", "source", "order", "out_trade_no", "platform", "source amt", "evidence")
    for column in columns:
        table.add_column(column, justify="right" if column in ("platform", "source amt") else "left")
    for item in discrepancies:
        table.add_row(
            discrepancy_class_name(item.discrepancy_class),
            reconciliation_pb2.DiscrepancyStatus.Name(item.status).removeprefix("DISCREPANCY_STATUS_"),
            item.source,
            item.order_id,
            item.out_trade_no or item.out_refund_no,
            format_yuan(item.platform_amount_fen),
            format_yuan(item.source_amount_fen),
            escape(item.evidence),
        )
    return table


def summary_adds_up(summary: data_pb2.DailySummary) -> bool:
    """The data platform's promise: billed total = fund + personal account + cash."""
    return summary.billed_total_fen == summary.fund_fen + summary.personal_account_fen + summary.cash_fen


def summary_check(summary: data_pb2.DailySummary) -> str:
    """The sum written out, so a reader can check it by eye."""
    parts = summary.fund_fen + summary.personal_account_fen + summary.cash_fen
    verdict = "[green]adds up[/green]" if summary_adds_up(summary) else "[red]DOES NOT ADD UP[/red]"
    return (
        f"fund {format_yuan(summary.fund_fen)} + personal account {format_yuan(summary.personal_account_fen)}"
        f" + cash {format_yuan(summary.cash_fen)} = {format_yuan(parts)}"
        f" vs billed total {format_yuan(summary.billed_total_fen)}: {verdict}"
    )


def summary_table(summary: data_pb2.DailySummary) -> Table:
    table = Table(title=f"Daily summary {summary.business_date}")
    for column in ("", "orders", "billed", "fund", "personal account", "cash"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        "settled",
        str(summary.settled_order_count),
        *map(format_yuan, (summary.billed_total_fen, summary.fund_fen, summary.personal_account_fen)),
        format_yuan(summary.cash_fen),
    )
    table.add_row(
        "refunded",
        str(summary.refund_count),
        format_yuan(summary.refunded_total_fen),
        format_yuan(summary.refunded_fund_fen),
        format_yuan(summary.refunded_personal_account_fen),
        format_yuan(summary.refunded_cash_fen),
    )
    return table


def breakdown_table(title: str, rows: Iterable[data_pb2.AmountBreakdown]) -> Table:
    table = Table(title=title)
    for column in ("key", "orders", "total", "fund", "personal account", "cash"):
        table.add_column(column, justify="left" if column == "key" else "right")
    for row in rows:
        table.add_row(
            row.key,
            str(row.order_count),
            *map(format_yuan, (row.total_fen, row.fund_fen, row.personal_account_fen, row.cash_fen)),
        )
    return table


def times_table(slices: Iterable[data_pb2.SettlementTimes], business_date: str) -> Table:
    table = Table(title=f"Order created -> settled, {business_date} (ms)")
    for column in ("slice", "count", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="left" if column == "slice" else "right")
    for item in slices:
        figures = (item.count, item.p50_ms, item.p90_ms, item.p99_ms, item.max_ms)
        table.add_row(item.slice, *(str(figure) for figure in figures))
    return table


def health_table(statuses: Mapping[str, str], addresses: Mapping[str, str]) -> Table:
    table = Table(title="grpc.health.v1")
    for column in ("service", "address", "status"):
        table.add_column(column)
    for service, status in statuses.items():
        style = "green" if status == "SERVING" else "red"
        table.add_row(service, addresses.get(service, ""), f"[{style}]{status}[/{style}]")
    return table


def shift_table(shift: payment_pb2.CloseCashierShiftResponse) -> Table:
    """A closed cashier shift: per channel what was taken and handed back, then the cash to hand over."""
    table = Table(title=f"Shift {shift.shift_id} of cashier {escape(shift.cashier_id)}")
    for column in ("channel", "payments", "collected", "refunds", "refunded"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for line in shift.totals:
        table.add_row(
            payment_pb2.Channel.Name(line.channel).removeprefix("CHANNEL_"),
            str(line.payment_count),
            format_yuan(line.collected_fen),
            str(line.refund_count),
            format_yuan(line.refunded_fen),
        )
    table.caption = f"cash to hand over: {format_yuan(shift.cash_to_hand_over_fen)}"
    return table
