"""python -m infra.simulators.his_driver --visits N --refunds K [--seed S] [--insured-share 0.6]

Plays a hospital morning against a running mesh (addresses from MEDPAY_*_ADDR, the WeChat Pay
simulator on MEDPAY_WECHATPAY_SIM_PORT), prints the report and exits 1 if anything failed.
Spans go to MEDPAY_TRACE_DIR/his-driver.jsonl, one trace per visit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from medpay.client import MedPayClient
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from infra.simulators.his_driver.morning import DriverOptions, play_morning
from infra.simulators.his_driver.report import MorningReport, failures_table, report_table
from infra.simulators.his_driver.tracing import grpc_tracing_interceptors, start_tracing
from infra.simulators.nhsa.settings import NhsaSimSettings
from services.runtime.config import MeshSettings

console = Console()


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.simulators.his_driver", description=__doc__)
    parser.add_argument("--visits", type=int, default=36)
    parser.add_argument("--refunds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20_250_101)
    parser.add_argument("--insured-share", type=float, default=0.6)
    parser.add_argument("--concurrency", type=int, default=4)
    return parser.parse_args(argv)


def options_from(arguments: argparse.Namespace, mesh: MeshSettings) -> DriverOptions:
    return DriverOptions(
        insured_share=arguments.insured_share,
        concurrency=arguments.concurrency,
        population_size=NhsaSimSettings().population,
        wechat_sim_url=f"http://{mesh.host}:{mesh.wechatpay_sim_port}",
    )


async def play(arguments: argparse.Namespace, options: DriverOptions) -> MorningReport:
    with Progress(console=console) as bar:
        visits = bar.add_task("visits", total=arguments.visits)
        refunds = bar.add_task("refunds", total=arguments.refunds)

        def advance(phase: str) -> None:
            bar.advance(visits if phase == "visit" else refunds)

        async with MedPayClient.from_env(interceptors=grpc_tracing_interceptors()) as client:
            return await play_morning(
                client, arguments.visits, arguments.refunds, arguments.seed, advance, options=options
            )


def traces_table(report: MorningReport) -> Table:
    table = Table(title="One trace per visit")
    for column in ("HIS bill", "department", "insured", "outcome", "trace id"):
        table.add_column(column)
    for visit in report.visits:
        outcome = "settled" if visit.settled else f"failed at {visit.failure.step if visit.failure else '?'}"
        table.add_row(
            visit.his_order_no, visit.dept_name, "yes" if visit.insured else "no", outcome, visit.trace_id
        )
    return table


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    mesh = MeshSettings()
    provider = start_tracing(mesh.trace_dir)
    try:
        report = asyncio.run(play(arguments, options_from(arguments, mesh)))
    finally:
        provider.force_flush()
    console.print(traces_table(report))
    console.print(report_table(report))
    if report.failures:
        console.print(failures_table(report.failures))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
