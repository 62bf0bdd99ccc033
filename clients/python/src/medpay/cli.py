"""`medpay`: the operator's command line over the mesh.

Addresses come from MEDPAY_PAYMENT_CORE_ADDR, MEDPAY_INSURANCE_ADAPTER_ADDR,
MEDPAY_RECONCILIATION_ADDR and MEDPAY_DATA_AGGREGATION_ADDR (loopback ports 50051-50054 by default).
Dates are "YYYY-MM-DD" business dates (Asia/Shanghai), or "today" / "yesterday".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.markup import escape

from medpay.client import Addresses, MedPayClient, MedPayError, tables
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

app = typer.Typer(help="Operate the MedPay Mesh payment middle platform.", no_args_is_help=True)
order_app = typer.Typer(help="Payment orders.", no_args_is_help=True)
recon_app = typer.Typer(help="T+1 reconciliation.", no_args_is_help=True)
shift_app = typer.Typer(help="Cashier shifts (收费员日结).", no_args_is_help=True)
app.add_typer(order_app, name="order")
app.add_typer(recon_app, name="recon")
app.add_typer(shift_app, name="shift")
console = Console()

DateArgument = Annotated[str, typer.Argument(help='Business date "YYYY-MM-DD", "today" or "yesterday".')]


def business_date(text: str) -> date:
    today = datetime.now(tables.HOSPITAL_TZ).date()
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    if text in named:
        return named[text]
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _run(command: Callable[[MedPayClient], Awaitable[None]]) -> None:
    """Run one command against the mesh; a platform error becomes a readable message and exit 1."""

    async def main() -> None:
        async with MedPayClient.from_env() as client:
            await command(client)

    try:
        asyncio.run(main())
    except MedPayError as error:
        reason = f" {error.reason}" if error.reason else ""
        console.print(f"[red]{error.code.name}[/red]{reason}: {escape(error.message)}")
        for violation in error.field_violations:
            console.print(f"  [yellow]{escape(violation.field)}[/yellow]: {escape(violation.description)}")
        raise typer.Exit(1) from None


@order_app.command("get")
def order_get(order_id: str) -> None:
    """One order with its items, payments and refunds."""

    async def show(client: MedPayClient) -> None:
        order = await client.get_order(order_id)
        console.print(tables.order_table(order))
        console.print(tables.items_table(order.items))
        if order.payments:
            console.print(tables.payments_table(order.payments))
        if order.refunds:
            console.print(tables.refunds_table(order.refunds))

    _run(show)


@order_app.command("watch")
def order_watch(
    order_id: str,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Give up after this many seconds.")
    ] = 300.0,
) -> None:
    """Follow an order as it changes (pushed by payment-core as each change commits) until it is
    SETTLED, CLOSED or REFUNDED; exit 1 if it is not by --timeout."""

    async def follow(client: MedPayClient) -> None:
        last: payment_pb2.PaymentOrder | None = None
        try:
            async for last in client.watch_order(order_id, timeout_s):
                console.print(f"{datetime.now(tables.HOSPITAL_TZ):%H:%M:%S}  {tables.order_progress(last)}")
        except MedPayError as error:
            if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            status = tables.order_status(last) if last is not None else "unknown"
            console.print(f"[yellow]order {escape(order_id)} still {status} after {timeout_s:g}s[/yellow]")
            raise typer.Exit(1) from None

    _run(follow)


@order_app.command("list")
def order_list(
    on: Annotated[str | None, typer.Option("--date", help="Business date of creation.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
) -> None:
    """Orders, newest first."""
    day = business_date(on) if on else None

    async def show(client: MedPayClient) -> None:
        orders: list[payment_pb2.PaymentOrder] = []
        async for order in client.list_orders(business_date=day):
            orders.append(order)
            if len(orders) >= limit:
                break
        console.print(tables.orders_table(orders, f"Orders {day or ''} (newest first, {len(orders)} shown)"))

    _run(show)


@order_app.command("refund")
def order_refund(
    order_id: str,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")],
    cash_fen: Annotated[int, typer.Option(min=0, help="Cash to refund in fen; 0 = all.")] = 0,
    operator_id: Annotated[str, typer.Option(help="Who asks; required for a partial refund.")] = "",
    request_id: Annotated[str | None, typer.Option(help="Reuse to replay a refund safely.")] = None,
) -> None:
    """Refund a settled order, in full or in part (insured: in full, revoked with the insurer)."""

    async def refund(client: MedPayClient) -> None:
        result = await client.refund_order(
            order_id, reason, cash_fen=cash_fen, operator_id=operator_id, request_id=request_id
        )
        console.print(tables.refunds_table([result.refund]))
        console.print(f"order {order_id} is now {tables.order_status(result.order)}")

    _run(refund)


@shift_app.command("close")
def shift_close(
    cashier_id: str,
    campus: Annotated[str, typer.Option(help="The campus code the cashier works at.")],
    at: Annotated[str | None, typer.Option(help="RFC 3339 close time; default now.")] = None,
    request_id: Annotated[str | None, typer.Option(help="Reuse to replay a close safely.")] = None,
) -> None:
    """Close the cashier's shift: what they took and handed back per channel, and the cash to hand over."""

    async def close(client: MedPayClient) -> None:
        shift = await client.close_cashier_shift(cashier_id, campus, at, request_id=request_id)
        console.print(tables.shift_table(shift))

    _run(close)


@recon_app.command("run")
def recon_run(
    day: DateArgument,
    wait_s: Annotated[
        float, typer.Option("--wait", min=1, help="Stop waiting after this many seconds; the run goes on.")
    ] = 300.0,
) -> None:
    """Reconcile a business day: platform, WeChat Pay bill, insurer totals. Waits for the run to end;
    exit 1 if it is still running by then (run the same command again: it answers the same run)."""
    when = business_date(day)

    async def reconcile(client: MedPayClient) -> None:
        run = await client.run_reconciliation(when, timeout_s=wait_s)
        console.print(tables.run_table(run))
        if run.status == reconciliation_pb2.RUN_STATUS_RUNNING:
            console.print(
                f"[yellow]still running after {wait_s:g}s[/yellow]: `medpay recon run {when}` again "
                "waits for the same run"
            )
            raise typer.Exit(1)
        if run.discrepancy_count:
            discrepancies = [item async for item in client.list_discrepancies(run.run_id)]
            console.print(tables.discrepancy_counts_table(discrepancies))

    _run(reconcile)


@recon_app.command("discrepancies")
def recon_discrepancies(run_id: str) -> None:
    """Every discrepancy a run found, with its evidence."""

    async def show(client: MedPayClient) -> None:
        discrepancies = [item async for item in client.list_discrepancies(run_id)]
        console.print(tables.discrepancies_table(discrepancies, run_id))

    _run(show)


@app.command("summary")
def summary(day: DateArgument) -> None:
    """The data platform's totals for a day: fund, personal account and cash."""
    when = business_date(day)

    async def show(client: MedPayClient) -> None:
        daily = await client.daily_summary(when)
        console.print(tables.summary_table(daily))
        for title, rows in (
            ("By scene", daily.by_scene),
            ("By channel", daily.by_channel),
            ("By insurance type", daily.by_insutype),
            ("By department", daily.by_dept),
        ):
            if rows:
                console.print(tables.breakdown_table(title, rows))
        console.print(tables.summary_check(daily))

    _run(show)


@app.command("times")
def times(day: DateArgument) -> None:
    """Order-created to settled percentiles for a day, overall and by scene and channel."""
    when = business_date(day)

    async def show(client: MedPayClient) -> None:
        console.print(tables.times_table(await client.settlement_times(when), when.isoformat()))

    _run(show)


@app.command("health")
def health() -> None:
    """grpc.health.v1 Check on the four services; exit 1 unless all are SERVING."""
    statuses: dict[str, str] = {}

    async def check(client: MedPayClient) -> None:
        statuses.update(await client.health())

    _run(check)
    console.print(tables.health_table(statuses, Addresses.from_env().by_service()))
    if any(status != "SERVING" for status in statuses.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
