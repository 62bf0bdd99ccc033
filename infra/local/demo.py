"""python -m infra.local.demo [--visits 36 --refunds 2]: a hospital morning on one machine.

Makes the simulated WeChat Pay keys, clears var/traces and (unless --keep-data) the previous
runs' data, starts the mesh with honcho (SQLite by default, logs in var/log/mesh.log), waits for
every health check, plays the morning through the facade (each visit waits for its settlement on
WatchPaymentOrder, pushed as it commits, not polled), reconciles the day, waits for the data
platform to catch up, prints the day's summary (checking that fund + personal account + cash =
billed, and that it agrees with what the HIS did), the settlement-time percentiles and one insured
settlement's trace across the processes.
The mesh is always stopped at the end. Exit status 1 if anything failed or did not add up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from medpay.client import MedPayClient, MedPayError, format_yuan, tables
from medpay.data.v1 import data_pb2
from medpay.reconciliation.v1 import reconciliation_pb2
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from infra.local import mesh as local_mesh
from infra.local.recovery_showcase import RecoveryShowcase
from infra.local.traces import (
    SpanRecord,
    build_tree,
    load_spans,
    render_tree,
    services_crossed,
    spans_of_trace,
    without_asgi_messages,
)
from infra.simulators.his_driver import DriverOptions, MorningReport, play_morning
from infra.simulators.his_driver.report import Totals, failures_table, report_table
from infra.simulators.his_driver.tracing import grpc_tracing_interceptors, start_tracing
from infra.simulators.nhsa.settings import NhsaSimSettings
from services.runtime.clock import business_date_of, utcnow
from services.runtime.config import MeshSettings

console = Console()
KEY_DIR = Path("var/keys")
LOG_PATH = Path("var/log/mesh.log")
# An insured settlement must have gone through at least these processes.
EXPECTED_IN_TRACE = ("his-driver", "payment-core", "insurance-adapter")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.local.demo", description=__doc__)
    parser.add_argument("--visits", type=int, default=36)
    parser.add_argument("--refunds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20_250_101)
    parser.add_argument("--insured-share", type=float, default=0.6)
    parser.add_argument(
        "--keep-data", action="store_true", help="continue from earlier runs instead of a fresh morning"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MEDPAY_DATABASE_URL"),
        help="PostgreSQL (postgresql+asyncpg://...) instead of SQLite; default $MEDPAY_DATABASE_URL",
    )
    return parser.parse_args(argv)


class Demo:
    """The demo's steps against a running mesh; each problem found is kept for the exit status."""

    def __init__(
        self,
        client: MedPayClient,
        settings: MeshSettings,
        arguments: argparse.Namespace,
        flush_spans: Callable[[], object],
    ) -> None:
        self.client = client
        self.settings = settings
        self.arguments = arguments
        self.flush_spans = flush_spans
        self.today = business_date_of(utcnow())
        self.problems: list[str] = []

    async def play(self) -> MorningReport:
        options = DriverOptions(
            insured_share=self.arguments.insured_share,
            population_size=NhsaSimSettings().population,
            wechat_sim_url=f"http://{self.settings.host}:{self.settings.wechatpay_sim_port}",
            alipay_sim_url=f"http://{self.settings.host}:{self.settings.alipay_sim_port}",
            way_to_pay="mixed",  # WeChat QR and code payments, Alipay QR and code, two payments
        )
        with Progress(console=console) as bar:
            visits = bar.add_task("outpatient visits", total=self.arguments.visits)
            refunds = bar.add_task("refunds", total=self.arguments.refunds)

            def advance(phase: str) -> None:
                bar.advance(visits if phase == "visit" else refunds)

            arguments = self.arguments
            report = await play_morning(
                self.client, arguments.visits, arguments.refunds, arguments.seed, advance, options=options
            )
        console.print(report_table(report))
        if report.failures:
            console.print(failures_table(report.failures))
            self.problems.append(f"{len(report.failures)} visits or refunds failed")
        if not report.settled_totals.adds_up:
            self.problems.append("the HIS's own settled split does not add up to the billed total")
        return report

    async def reconcile(self) -> None:
        run = await self.client.run_reconciliation(self.today)
        console.print(tables.run_table(run))
        discrepancies = [item async for item in self.client.list_discrepancies(run.run_id)]
        if discrepancies:
            console.print(tables.discrepancy_counts_table(discrepancies))
            self.problems.append(f"reconciliation found {len(discrepancies)} discrepancies")
        else:
            console.print("no discrepancies")
        if run.status != reconciliation_pb2.RUN_STATUS_COMPLETED:
            self.problems.append(f"reconciliation run {run.run_id} did not complete: {run.failure_reason}")

    async def wait_for_ingest(self, timeout_s: float = 30.0) -> None:
        """Until data-aggregation's cursor on each feed it reads has reached that feed's head."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        while True:
            lagging = await self._ingest_lag()
            if not lagging:
                return
            if loop.time() > give_up_at:
                self.problems.append(f"data-aggregation did not catch up: {lagging}")
                return
            await asyncio.sleep(0.25)

    async def _ingest_lag(self) -> dict[str, int]:
        heads = await self.client.feed_heads()
        cursors = {source.source_service: source.cursor for source in await self.client.ingest_status()}
        read = {service for service in heads if service in cursors or service == "payment-core"}
        return {
            service: heads[service] - cursors.get(service, 0)
            for service in read
            if cursors.get(service, 0) < heads[service]
        }

    async def summarise(self, before: data_pb2.DailySummary, report: MorningReport) -> None:
        after = await self.client.daily_summary(self.today)
        console.print(tables.summary_table(after))
        console.print(tables.summary_check(after))
        if not tables.summary_adds_up(after):
            self.problems.append("the daily summary's fund + personal account + cash != billed total")
        console.print(agreement_table(before, after, report))
        if settled_delta(before, after) != report.settled_totals:
            self.problems.append("the data platform's settled totals disagree with the HIS")
        if refunded_delta(before, after) != report.refunded_totals:
            self.problems.append("the data platform's refund totals disagree with the HIS")
        times = await self.client.settlement_times(self.today)
        console.print(tables.times_table(times, self.today.isoformat()))

    async def show_trace(self, trace_id: str | None) -> None:
        if trace_id is None:
            self.problems.append("no insured visit settled, so there is no trace to show")
            return
        self.flush_spans()
        spans = await _settled_trace(self.settings.trace_dir, trace_id)
        crossed = services_crossed(spans)
        console.print(f"\n[bold]Trace {trace_id}[/bold] (one insured settlement)")
        for line in render_tree(build_tree(without_asgi_messages(spans))):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print(f"crossed {len(crossed)} processes: {' -> '.join(crossed)}")
        missing = [service for service in EXPECTED_IN_TRACE if service not in crossed]
        if missing:
            self.problems.append(f"the settlement's trace never reached {', '.join(missing)}")


async def _settled_trace(trace_dir: Path, trace_id: str, timeout_s: float = 6.0) -> list[SpanRecord]:
    """The trace's spans once every process has flushed them (the count stops growing)."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    spans = spans_of_trace(load_spans(trace_dir), trace_id)
    while loop.time() < give_up_at:
        await asyncio.sleep(0.6)  # longer than the exporters' 200 ms batch delay
        again = spans_of_trace(load_spans(trace_dir), trace_id)
        if spans and len(again) == len(spans):
            return again
        spans = again
    return spans


def _totals(summary: data_pb2.DailySummary, refunds: bool) -> Totals:
    if refunds:
        return Totals(
            summary.refund_count,
            summary.refunded_total_fen,
            summary.refunded_fund_fen,
            summary.refunded_personal_account_fen,
            summary.refunded_cash_fen,
        )
    return Totals(
        summary.settled_order_count,
        summary.billed_total_fen,
        summary.fund_fen,
        summary.personal_account_fen,
        summary.cash_fen,
    )


def _minus(after: Totals, before: Totals) -> Totals:
    return Totals(
        after.count - before.count,
        after.billed_fen - before.billed_fen,
        after.fund_fen - before.fund_fen,
        after.personal_account_fen - before.personal_account_fen,
        after.cash_fen - before.cash_fen,
    )


def settled_delta(before: data_pb2.DailySummary, after: data_pb2.DailySummary) -> Totals:
    """What this morning added to the day (the day may hold earlier runs too)."""
    return _minus(_totals(after, refunds=False), _totals(before, refunds=False))


def refunded_delta(before: data_pb2.DailySummary, after: data_pb2.DailySummary) -> Totals:
    return _minus(_totals(after, refunds=True), _totals(before, refunds=True))


def agreement_table(
    before: data_pb2.DailySummary, after: data_pb2.DailySummary, report: MorningReport
) -> Table:
    table = Table(title="This morning: the HIS's own count vs the data platform's (after - before)")
    for column in ("", "count", "billed", "fund", "personal account", "cash", "agree"):
        table.add_column(column, justify="left" if column in ("", "agree") else "right")
    pairs = (
        ("settled", report.settled_totals, settled_delta(before, after)),
        ("refunded", report.refunded_totals, refunded_delta(before, after)),
    )
    for label, his, platform in pairs:
        verdict = "[green]yes[/green]" if his == platform else "[red]NO[/red]"
        table.add_row(f"{label} (HIS)", *_cells(his), verdict)
        table.add_row(f"{label} (data platform)", *_cells(platform), "")
    return table


def _cells(totals: Totals) -> list[str]:
    amounts = (totals.billed_fen, totals.fund_fen, totals.personal_account_fen, totals.cash_fen)
    return [str(totals.count), *map(format_yuan, amounts)]


async def run_demo(
    arguments: argparse.Namespace, settings: MeshSettings, mesh: local_mesh.Mesh, provider: TracerProvider
) -> list[str]:
    async with MedPayClient.from_env(interceptors=grpc_tracing_interceptors()) as client:
        with console.status("waiting for the mesh to report SERVING ..."):
            await local_mesh.wait_until_ready(mesh, client, local_mesh.simulator_urls(settings))
        demo = Demo(client, settings, arguments, provider.force_flush)
        wechat_sim = f"http://{settings.host}:{settings.wechatpay_sim_port}"
        demo.problems += await RecoveryShowcase(client, wechat_sim, console).run()
        await demo.wait_for_ingest()
        before = await client.daily_summary(demo.today)
        report = await demo.play()
        await demo.reconcile()
        await demo.wait_for_ingest()
        await demo.summarise(before, report)
        await demo.show_trace(report.insured_settled_trace())
        return demo.problems


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    os.chdir(local_mesh.ROOT)  # var/ and the Procfile's modules are relative to the repository root
    settings = MeshSettings()
    local_mesh.make_keys(KEY_DIR)
    local_mesh.clear_traces(settings.trace_dir)
    if not arguments.keep_data:
        local_mesh.start_fresh(settings.data_dir, arguments.database_url)
    provider = start_tracing(settings.trace_dir)
    env = local_mesh.mesh_environment(settings, KEY_DIR, arguments.database_url)
    console.print(f"starting the mesh (log: {LOG_PATH}) ...")
    try:
        with local_mesh.running_mesh(env, LOG_PATH) as mesh:
            problems = asyncio.run(run_demo(arguments, settings, mesh, provider))
    except local_mesh.MeshFailed as failed:
        console.print("[red]mesh failed:[/red]")
        console.print(str(failed), markup=False, highlight=False)
        return 1
    except MedPayError as error:
        console.print(f"[red]the mesh refused a step:[/red] {escape(str(error))} (log: {LOG_PATH})")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the mesh was stopped[/yellow]")
        return 130
    finally:
        provider.shutdown()
    for problem in problems:
        console.print(f"[red]problem:[/red] {escape(problem)}")
    console.print("[green]demo passed[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
