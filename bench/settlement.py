"""Settlement benchmark: insured and self-pay outpatient settlements through the running mesh.

Starts every service and simulator as its own process on loopback (PostgreSQL when reachable),
measures a bare gRPC echo between two processes as the floor, then plays bounded batches of visits
through the HIS driver (create → pay → patient scans → SETTLED) at a fixed concurrency. Reports
throughput, client-observed latency percentiles, the platform's own order→settled times (from
data-aggregation), and the CPU seconds the platform's processes spent per settlement (which does
not depend on how busy the machine is). Prints a table; writes JSON under bench/results/.

    python -m bench.settlement [--visits 60] [--concurrency 4] [--echo-calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from medpay.client import MedPayClient
from rich.console import Console
from rich.table import Table

from bench.echo import measure_echo
from infra.local.processes import MeshLayout, MeshProcesses, free_port
from infra.simulators.his_driver.morning import DriverOptions, play_morning
from services.runtime.clock import business_date_of, utcnow

PLATFORM = ("payment-core", "insurance-adapter", "reconciliation", "data-aggregation")
SIMULATORS = ("nhsa-sim", "wechatpay-sim")
RESULTS = Path(__file__).with_name("results")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Row:
    name: str
    count: int
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    platform_cpu_ms_per_op: float | None = None
    simulator_cpu_ms_per_op: float | None = None
    # Per process of the mesh (platform and simulators), CPU ms per settlement.
    cpu_ms_per_op_by_process: dict[str, float] | None = None


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-share * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_row(name: str, latencies_ms: list[float], wall_s: float) -> Row:
    ordered = sorted(latencies_ms)
    return Row(
        name,
        len(ordered),
        len(ordered) / wall_s if wall_s else 0.0,
        percentile(ordered, 0.5),
        percentile(ordered, 0.9),
        percentile(ordered, 0.99),
        ordered[-1] if ordered else 0.0,
    )


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


async def echo_floor(calls: int) -> list[Row]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.echo", "serve", str(port)])  # noqa: ASYNC220
    try:
        await asyncio.sleep(1.0)
        rows = []
        for concurrency in (1, 16):
            started = time.perf_counter()
            latencies = await measure_echo(f"127.0.0.1:{port}", calls, concurrency)
            wall = time.perf_counter() - started
            rows.append(
                latency_row(f"gRPC echo floor, {concurrency} in flight", [x * 1000 for x in latencies], wall)
            )
        return rows
    finally:
        server.terminate()
        server.wait(10)


async def settlement_batch(
    mesh: MeshProcesses,
    client: MedPayClient,
    name: str,
    visits: int,
    insured_share: float,
    concurrency: int,
    seed: int,
    use_personal_account: bool = True,
) -> Row:
    options = DriverOptions(
        insured_share=insured_share,
        use_personal_account=use_personal_account,
        concurrency=concurrency,
        wechat_sim_url=mesh.layout.http_base("wechatpay-sim"),
    )
    platform_pids = [mesh.processes[n].pid for n in PLATFORM]
    simulator_pids = [mesh.processes[n].pid for n in SIMULATORS]
    platform_before, simulators_before = cpu_seconds(platform_pids), cpu_seconds(simulator_pids)
    each = {n: mesh.processes[n].pid for n in (*PLATFORM, *SIMULATORS)}
    each_before = {n: cpu_seconds([pid]) for n, pid in each.items()}
    started = time.perf_counter()
    report = await play_morning(client, visits, 0, seed, options=options)
    wall = time.perf_counter() - started
    settled = [visit for visit in report.visits if visit.settled]
    if len(settled) != visits:
        failures = [visit.failure for visit in report.visits if visit.failure]
        raise RuntimeError(f"{name}: {visits - len(settled)} visits failed, first: {failures[:1]}")
    row = latency_row(name, [visit.elapsed_ms for visit in settled], wall)
    row.platform_cpu_ms_per_op = (cpu_seconds(platform_pids) - platform_before) * 1000 / len(settled)
    row.simulator_cpu_ms_per_op = (cpu_seconds(simulator_pids) - simulators_before) * 1000 / len(settled)
    row.cpu_ms_per_op_by_process = {
        n: round((cpu_seconds([pid]) - each_before[n]) * 1000 / len(settled), 1) for n, pid in each.items()
    }
    return row


async def server_side_times(client: MedPayClient) -> list[dict[str, object]]:
    """data-aggregation's order→settled percentiles for today (platform time, no client polling)."""
    today = business_date_of(utcnow()).isoformat()
    await asyncio.sleep(1.5)  # let the event feeds be ingested
    slices = await client.settlement_times(today)
    return [
        {
            "slice": s.slice,
            "count": s.count,
            "p50_ms": s.p50_ms,
            "p90_ms": s.p90_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
        }
        for s in slices
    ]


async def database_for_bench() -> tuple[str | None, str]:
    """A scratch PostgreSQL database when one answers, else the SQLite default (said so)."""
    import asyncpg

    server = os.environ.get("MEDPAY_BENCH_DATABASE_URL", DEFAULT_POSTGRES).replace("+asyncpg", "")
    try:
        connection = await asyncpg.connect(server, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None, "SQLite (no PostgreSQL reachable)"
    name = f"medpay_bench_{int(time.time())}"
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return server.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+asyncpg://"
    ) + "/" + name, "PostgreSQL"


async def drop_database(url: str) -> None:
    import asyncpg

    server = os.environ.get("MEDPAY_BENCH_DATABASE_URL", DEFAULT_POSTGRES).replace("+asyncpg", "")
    connection = await asyncpg.connect(server)
    await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await connection.close()


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    rows = await echo_floor(arguments.echo_calls)
    database_url, backend = await database_for_bench()
    with tempfile.TemporaryDirectory(prefix="medpay-bench-") as workdir:
        mesh = MeshProcesses(
            MeshLayout(Path(workdir), database_url, extra_env={"MEDPAY_LOG_LEVEL": "WARNING"})
        )
        try:
            await mesh.start()
            layout = mesh.layout
            async with MedPayClient.connect(
                layout.grpc_address("payment-core"),
                layout.grpc_address("insurance-adapter"),
                layout.grpc_address("reconciliation"),
                layout.grpc_address("data-aggregation"),
            ) as client:
                await settlement_batch(mesh, client, "warm-up", 6, 0.5, 2, seed=1)
                # Insured: pre-settle, cash share by WeChat native QR, 2207. Insured with the
                # personal account: many bills need no channel at all. Self-pay: channel only.
                for name, share, account in (
                    ("insured, cash share by WeChat", 1.0, False),
                    ("insured, personal account used", 1.0, True),
                    ("self-pay, WeChat", 0.0, True),
                ):
                    rows.append(
                        await settlement_batch(
                            mesh, client, name, arguments.visits, share, arguments.concurrency, 7, account
                        )
                    )
                server_times = await server_side_times(client)
        finally:
            mesh.stop()
            if database_url:
                await drop_database(database_url)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "database": backend,
        "visits_per_batch": arguments.visits,
        "concurrency": arguments.concurrency,
        "rows": [asdict(row) for row in rows],
        "platform_order_to_settled_ms": server_times,
    }


def print_table(result: dict[str, object]) -> None:
    machine: dict[str, object] = result["machine"]  # type: ignore[assignment]
    table = Table(
        title=f"MedPay Mesh settlement benchmark: {result['database']}, {machine['cpus']} CPUs, "
        f"{result['concurrency']} visits in flight, {result['visits_per_batch']} per batch"
    )
    for column in (
        "what",
        "n",
        "per s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "platform CPU ms/op",
        "sims CPU ms/op",
    ):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in result["rows"]:  # type: ignore[attr-defined]
        cpu = row["platform_cpu_ms_per_op"]
        sim = row["simulator_cpu_ms_per_op"]
        table.add_row(
            row["name"],
            str(row["count"]),
            f"{row['per_second']:.1f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['max_ms']:.2f}",
            "" if cpu is None else f"{cpu:.1f}",
            "" if sim is None else f"{sim:.1f}",
        )
    console = Console(width=150)
    console.print(table)
    times = Table(title="platform order → settled (data-aggregation), ms")
    for column in ("slice", "count", "p50", "p90", "p99", "max"):
        times.add_column(column)
    for item in result["platform_order_to_settled_ms"]:  # type: ignore[attr-defined]
        times.add_row(
            *(str(item.get(k, "")) for k in ("slice", "count", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
        )
    console.print(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visits", type=int, default=60, help="settlements per batch (bounded)")
    parser.add_argument("--concurrency", type=int, default=4, help="visits in flight")
    parser.add_argument("--echo-calls", type=int, default=2000)
    arguments = parser.parse_args()
    if not 1 <= arguments.visits <= 2000 or not 1 <= arguments.concurrency <= 64:
        parser.error("--visits must be 1..2000 and --concurrency 1..64")
    result = asyncio.run(run(arguments))
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"settlement-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    Console().print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
