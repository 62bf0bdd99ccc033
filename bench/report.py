"""The settlement bench's tables, printed from its JSON result (bench/settlement.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

SHORT = {"payment-core": "pc", "insurance-adapter": "ia", "reconciliation": "rc", "data-aggregation": "da"}


def print_tables(result: dict[str, Any], console: Console) -> None:
    rows: list[dict[str, Any]] = result["rows"]
    console.print(latency_table(result, rows))
    settlements = [row for row in rows if row["sql_statements_per_op_by_service"] is not None]
    console.print(round_trips_table(settlements))
    if settlements and settlements[0]["steps"]:
        console.print(steps_table(settlements[0]))
    if "idle_cpu_percent_by_process" in result:
        console.print(processes_table(result))
    for key, title in (
        ("platform_order_to_settled_ms_1_in_flight", "after the 1-in-flight batch"),
        ("platform_order_to_settled_ms", "all batches"),
    ):
        if key in result:
            console.print(times_table(result[key], title))


def latency_table(result: dict[str, Any], rows: list[dict[str, Any]]) -> Table:
    machine = result["machine"]
    table = Table(
        title=f"MedPay Mesh settlement benchmark: {result['database']}, {machine['cpus']} CPUs, "
        f"{result['visits_per_batch']} visits per batch"
    )
    columns = ("what", "in flight", "n", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "platform CPU ms/op", "sims CPU ms/op")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["concurrency"] or ""),
            str(row["count"]),
            f"{row['per_second']:.1f}",
            *(f"{row[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            _number(row["platform_cpu_ms_per_op"]),
            _number(row["simulator_cpu_ms_per_op"]),
        )
    return table


def round_trips_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        title="round trips per settlement, counted by the services: SQL statements / transactions "
        "(pc payment-core, ia insurance-adapter, rc reconciliation, da data-aggregation), gRPC calls, "
        "HTTP requests"
    )
    table.add_column("what", no_wrap=True)
    for short in SHORT.values():
        table.add_column(f"SQL {short}", justify="right")
    for column in ("DB conns opened", "gRPC served", "gRPC made", "HTTP out", "HTTP in"):
        table.add_column(column, justify="right")
    for row in rows:
        statements = row["sql_statements_per_op_by_service"]
        transactions = row["sql_transactions_per_op_by_service"]
        table.add_row(
            row["name"],
            *(f"{statements[s]:.1f} / {transactions[s]:.1f}" for s in SHORT),
            _number(sum((row.get("sql_connects_per_op_by_service") or {}).values())),
            *(_number(row[f"{k}_per_op"]) for k in ("grpc_served", "grpc_made", "http_out", "http_in")),
        )
    return table


def steps_table(row: dict[str, Any]) -> Table:
    table = Table(title=f"steps of a settlement ({row['name']}): what bench/budget.json holds")
    for column in ("service", "step", "calls/op", "SQL stmts/call", "SQL txns/call"):
        table.add_column(column, justify="left" if column in ("service", "step") else "right")
    for service, steps in row["steps"].items():
        for step, counts in steps.items():
            table.add_row(
                service,
                step.rsplit("/", 1)[-1] if step.startswith("/") else step,
                _number(counts["calls_per_op"]),
                _number(counts["statements_per_call"]),
                _number(counts["transactions_per_call"]),
            )
    return table


def processes_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"processes after the run: RSS, and CPU over {result['idle_seconds']:g} s of no traffic"
    )
    for column in ("process", "RSS MB", "idle CPU % of a core"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name, rss in result["rss_mb_by_process"].items():
        table.add_row(name, f"{rss:.1f}", f"{result['idle_cpu_percent_by_process'][name]:.2f}")
    return table


def times_table(slices: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=f"platform order → settled (data-aggregation), ms, {title}")
    for column in ("slice", "count", "p50", "p90", "p99", "max"):
        table.add_column(column)
    for item in slices:
        table.add_row(
            *(str(item.get(k, "")) for k in ("slice", "count", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
        )
    return table


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
