"""Settlement benchmark: insured and self-pay outpatient settlements through the running mesh.

Starts every service and simulator as its own process on loopback (PostgreSQL when reachable),
measures a bare gRPC echo between two processes as the floor, then plays bounded batches of visits
through the HIS driver (create → pay → patient scans → SETTLED): the insured road at 1 in flight
(latency), each kind of settlement at the default concurrency, the insured road at a high one
(throughput). For each batch it reports throughput, client-observed latency percentiles, the CPU
seconds the platform's processes spent per settlement (which does not depend on how busy the
machine is) and, counted by the services themselves (their /metrics), the round trips per
settlement: SQL statements and transactions per service, gRPC calls served and made, HTTP requests
made and served. Then the platform's own order→settled times (data-aggregation), each process's
RSS, and its CPU over 10 s of no traffic. Prints tables; writes JSON under bench/results/.

    python -m bench.settlement [--visits 60] [--concurrency 4] [--high-concurrency 16]
    python -m bench.settlement --budget-only     # refresh bench/budget.json only (make budget)
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

from bench import budget, report
from bench.echo import measure_echo
from infra.local.processes import MeshLayout, MeshProcesses, free_port
from infra.local.scrape import Reading, scrape
from infra.simulators.his_driver.morning import DriverOptions, play_morning
from services.runtime.clock import business_date_of, utcnow

PLATFORM = ("payment-core", "insurance-adapter", "reconciliation", "data-aggregation")
SIMULATORS = ("nhsa-sim", "wechatpay-sim", "alipay-sim")
RESULTS = Path(__file__).with_name("results")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
INSURED_BY_WECHAT = "insured, cash share by WeChat"
# name, insured share, personal account used
KINDS = (
    (INSURED_BY_WECHAT, 1.0, False),
    ("insured, personal account used", 1.0, True),
    ("self-pay, WeChat", 0.0, True),
)
# Each channel's cost on its own (self-pay: no insurer in the way), against "self-pay, WeChat" (QR).
CHANNEL_KINDS = (
    ("self-pay, WeChat code payment", "wechat_code"),
    ("self-pay, Alipay QR", "alipay_qr"),
    ("self-pay, Alipay code payment", "alipay_code"),
    ("self-pay, two payments (WeChat QR + code)", "two_payments"),
    ("self-pay, cash at the window", "cash"),
    ("self-pay, bank card (POS) at the window", "pos"),
)
# The hot account: every payment at once into one campus's one merchant account (WeChat Pay) and
# one cashier's drawer (cash). The ledger only appends postings (no balance row is updated), so
# the same account taking every payment should not queue them: compare with the 4-in-flight rows.
HOT_ACCOUNT_KINDS = (
    ("hot account: self-pay, one WeChat Pay merchant", "wechat_qr"),
    ("hot account: self-pay, one cashier's cash drawer", "cash"),
)


@dataclass
class Row:
    name: str
    count: int
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    concurrency: int | None = None
    platform_cpu_ms_per_op: float | None = None
    simulator_cpu_ms_per_op: float | None = None
    # Per process of the mesh (platform and simulators), CPU ms per settlement.
    cpu_ms_per_op_by_process: dict[str, float] | None = None
    # Round trips per settlement, counted by the services (services.runtime.metrics).
    sql_statements_per_op_by_service: dict[str, float] | None = None
    sql_transactions_per_op_by_service: dict[str, float] | None = None
    sql_checkouts_per_op_by_service: dict[str, float] | None = None
    # New database connections per settlement: a pool too small for the load opens and closes them.
    sql_connects_per_op_by_service: dict[str, float] | None = None
    grpc_served_per_op: float | None = None
    grpc_made_per_op: float | None = None
    http_out_per_op: float | None = None
    http_in_per_op: float | None = None
    grpc_served_per_op_by_method: dict[str, float] | None = None
    http_out_per_op_by_peer: dict[str, float] | None = None
    # service -> step (the RPC or route served, with what it spawned) -> calls per settlement,
    # statements and transactions per call (bench/budget.py)
    steps: budget.Steps | None = None
    rss_mb_by_process: dict[str, float] | None = None


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


def rss_mb(pid: int) -> float:
    """Resident set size of the process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def process_ids(mesh: MeshProcesses) -> dict[str, int]:
    return {name: mesh.processes[name].pid for name in (*PLATFORM, *SIMULATORS)}


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
            row = latency_row(
                f"gRPC echo floor, {concurrency} in flight", [x * 1000 for x in latencies], wall
            )
            row.concurrency = concurrency
            rows.append(row)
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
    way_to_pay: str = "wechat_qr",
) -> tuple[Row, budget.Steps]:
    """The batch's row, and its steps' counts (bench/budget.py) over the whole batch."""
    options = DriverOptions(
        insured_share=insured_share,
        use_personal_account=use_personal_account,
        concurrency=concurrency,
        wechat_sim_url=mesh.layout.http_base("wechatpay-sim"),
        alipay_sim_url=mesh.layout.http_base("alipay-sim"),
        way_to_pay=way_to_pay,
    )
    each = process_ids(mesh)
    cpu_before = {n: cpu_seconds([pid]) for n, pid in each.items()}
    counts_before = await scrape(mesh.layout)
    started = time.perf_counter()
    report_ = await play_morning(client, visits, 0, seed, options=options)
    wall = time.perf_counter() - started
    cpu_after = {n: cpu_seconds([pid]) for n, pid in each.items()}
    counts = await scrape(mesh.layout) - counts_before
    settled = [visit for visit in report_.visits if visit.settled]
    if len(settled) != visits:
        failures = [visit.failure for visit in report_.visits if visit.failure]
        raise RuntimeError(f"{name}: {visits - len(settled)} visits failed, first: {failures[:1]}")
    row = latency_row(name, [visit.elapsed_ms for visit in settled], wall)
    row.concurrency = concurrency
    spent = {n: (cpu_after[n] - cpu_before[n]) * 1000 / len(settled) for n in each}
    row.platform_cpu_ms_per_op = sum(spent[n] for n in PLATFORM)
    row.simulator_cpu_ms_per_op = sum(spent[n] for n in SIMULATORS)
    row.cpu_ms_per_op_by_process = {n: round(ms, 1) for n, ms in spent.items()}
    round_trips(row, counts, len(settled), peers(mesh.layout))
    steps = budget.steps_of(counts)
    row.steps = budget.described(steps, len(settled))
    row.rss_mb_by_process = {n: rss_mb(pid) for n, pid in each.items()}
    return row, steps


def peers(layout: MeshLayout) -> dict[str, str]:
    """host:port → the process listening there (for the HTTP requests made)."""
    return {f"127.0.0.1:{layout.ports[name]}": name for name in SIMULATORS} | {
        f"127.0.0.1:{layout.ports['payment-core-notify']}": "payment-core-notify"
    }


def round_trips(row: Row, counts: Reading, settled: int, hosts: dict[str, str]) -> None:
    def each(counter: str) -> dict[str, float]:
        return {s: round(counts.total(s, counter) / settled, 2) for s in PLATFORM}

    def summed(counter: str, label: str, names: dict[str, str] | None = None) -> dict[str, float]:
        sums: dict[str, float] = {}
        for service in PLATFORM:
            for key, value in counts.by_label(service, counter, label).items():
                key = (names or {}).get(key, key)
                sums[key] = sums.get(key, 0.0) + value
        return {key: round(value / settled, 2) for key, value in sorted(sums.items()) if value}

    row.sql_statements_per_op_by_service = each("statements")
    row.sql_transactions_per_op_by_service = each("transactions")
    row.sql_checkouts_per_op_by_service = each("checkouts")
    row.sql_connects_per_op_by_service = each("connects")
    row.grpc_served_per_op = round(sum(each("grpc_served").values()), 2)
    row.grpc_made_per_op = round(sum(each("grpc_made").values()), 2)
    row.http_out_per_op = round(sum(each("http_made").values()), 2)
    row.http_in_per_op = round(sum(each("http_served").values()), 2)
    row.grpc_served_per_op_by_method = {
        method.rsplit("/", 1)[-1]: calls for method, calls in summed("grpc_served", "method").items()
    }
    row.http_out_per_op_by_peer = summed("http_made", "host", hosts)


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


async def idle_cpu_percent(mesh: MeshProcesses, seconds: float) -> dict[str, float]:
    """Each process's CPU over `seconds` of no traffic, in % of one core."""
    each = process_ids(mesh)
    before = {n: cpu_seconds([pid]) for n, pid in each.items()}
    await asyncio.sleep(seconds)
    return {n: round((cpu_seconds([pid]) - before[n]) * 100 / seconds, 2) for n, pid in each.items()}


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


async def play_batches(
    mesh: MeshProcesses, client: MedPayClient, arguments: argparse.Namespace, result: dict[str, object]
) -> list[Row]:
    visits, rows = arguments.visits, []
    # Warm-up (connections, the insurer sign-in), then the insured road alone: its latency, and
    # the round trips per step the budget holds.
    await settlement_batch(mesh, client, "warm-up", 6, 0.5, 1, seed=1)
    alone, steps = await settlement_batch(
        mesh, client, f"{INSURED_BY_WECHAT}, 1 in flight", visits, 1.0, 1, 7, False
    )
    rows.append(alone)
    result["budget_steps"] = budget.per_call(steps)
    if arguments.budget_only:
        return rows
    result["platform_order_to_settled_ms_1_in_flight"] = await server_side_times(client)
    # Insured: pre-settle, cash share by WeChat native QR, 2207. Insured with the personal
    # account: many bills need no channel at all. Self-pay: channel only.
    for name, share, account in KINDS:
        row, _ = await settlement_batch(mesh, client, name, visits, share, arguments.concurrency, 8, account)
        rows.append(row)
    for name, way in CHANNEL_KINDS:
        row, _ = await settlement_batch(
            mesh, client, name, visits, 0.0, arguments.concurrency, 8, way_to_pay=way
        )
        rows.append(row)
    high = arguments.high_concurrency
    row, _ = await settlement_batch(
        mesh, client, f"{INSURED_BY_WECHAT}, {high} in flight", visits, 1.0, high, 9, False
    )
    rows.append(row)
    for name, way in HOT_ACCOUNT_KINDS:
        row, _ = await settlement_batch(
            mesh, client, f"{name}, {high} in flight", visits, 0.0, high, 10, way_to_pay=way
        )
        rows.append(row)
    result["platform_order_to_settled_ms"] = await server_side_times(client)
    await asyncio.sleep(2.0)  # the feeds and relays catch up: then nothing moves
    result["idle_seconds"] = arguments.idle_seconds
    result["idle_cpu_percent_by_process"] = await idle_cpu_percent(mesh, arguments.idle_seconds)
    result["rss_mb_by_process"] = {n: rss_mb(pid) for n, pid in process_ids(mesh).items()}
    return rows


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    rows = [] if arguments.budget_only else await echo_floor(arguments.echo_calls)
    database_url, backend = await database_for_bench()
    result: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "database": backend,
        "visits_per_batch": arguments.visits,
        "concurrency": arguments.concurrency,
        "high_concurrency": arguments.high_concurrency,
    }
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
                rows += await play_batches(mesh, client, arguments, result)
        finally:
            mesh.stop()
            if database_url:
                await drop_database(database_url)
    result["rows"] = [asdict(row) for row in rows]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visits", type=int, default=60, help="settlements per batch (bounded)")
    parser.add_argument("--concurrency", type=int, default=4, help="visits in flight")
    parser.add_argument("--high-concurrency", type=int, default=16, help="visits in flight, throughput run")
    parser.add_argument("--echo-calls", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="no traffic, for idle CPU")
    parser.add_argument(
        "--write-budget", action="store_true", help=f"also write {budget.BUDGET_PATH.name} from this run"
    )
    parser.add_argument(
        "--budget-only", action="store_true", help="only the 1-in-flight insured batch; write the budget"
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.visits <= 2000 or not all(
        1 <= c <= 64 for c in (arguments.concurrency, arguments.high_concurrency)
    ):
        parser.error("--visits must be 1..2000 and the concurrencies 1..64")
    if not 1 <= arguments.idle_seconds <= 120:
        parser.error("--idle-seconds must be 1..120")
    result = asyncio.run(run(arguments))
    console = Console(width=160)
    report.print_tables(result, console)
    if arguments.write_budget or arguments.budget_only:
        steps: budget.Steps = result["budget_steps"]  # type: ignore[assignment]
        budget.write_budget(steps, str(result["database"]), str(result["when"]))
        console.print(f"wrote {budget.BUDGET_PATH}")
    if arguments.budget_only:
        return 0
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"settlement-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
