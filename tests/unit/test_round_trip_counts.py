"""The services' own counts (services.runtime.metrics), how the bench reads them (infra.local.scrape)
and the budget a step is held to (bench.budget)."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.budget import Overrun, overruns, per_call, steps_of
from infra.local.scrape import Reading, parse
from services.runtime import metrics


def _exposition() -> str:
    registry = CollectorRegistry()
    registry.register(metrics._TallyCollector())
    return generate_latest(registry).decode()


async def test_statements_and_transactions_are_counted_by_verb_and_origin() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    metrics.count_sql(engine, "unit-sql")
    token = metrics.serving("/unit.Service/Step")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("insert into t values (1)"))
            await connection.execute(text("INSERT INTO t VALUES (:x)"), [{"x": 2}, {"x": 3}])
            await connection.execute(text("  SELECT x FROM t"))
    finally:
        metrics.done_serving(token)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    await engine.dispose()

    reading = parse("unit", _exposition())
    # CREATE is OTHER; an executemany is one statement; the BEGIN SQLite is sent is a transaction.
    assert _only(reading, "unit-sql", "statements", "verb") == {"OTHER": 1.0, "INSERT": 2.0, "SELECT": 2.0}
    assert _only(reading, "unit-sql", "statements", "origin") == {
        "/unit.Service/Step": 4.0,
        "background": 1.0,
    }
    assert _only(reading, "unit-sql", "transactions", "origin") == {
        "/unit.Service/Step": 1.0,
        "background": 1.0,
    }


def _only(reading: Reading, service: str, counter: str, label: str) -> dict[str, float]:
    """One engine's series (the collector is process-wide: other tests count there too)."""
    sums: dict[str, float] = {}
    for (_, short, labels), value in reading.values.items():
        found = dict(labels)
        if short == counter and found.get("service") == service:
            sums[found[label]] = sums.get(found[label], 0.0) + value
    return sums


async def test_http_served_is_counted_by_route_and_status_and_marks_its_work() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(metrics.origin.get())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(_message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    counted = metrics.CountingAsgi(app, ["/unit/notify"])
    before = dict(metrics.HTTP_SERVED.counts)
    await counted({"type": "http", "path": "/unit/notify"}, receive, send)
    await counted({"type": "http", "path": "/elsewhere"}, receive, send)

    assert seen == ["http /unit/notify", "other"]
    assert metrics.origin.get() == metrics.BACKGROUND
    grown = {k: v - before.get(k, 0) for k, v in metrics.HTTP_SERVED.counts.items() if v != before.get(k, 0)}
    assert grown == {("http /unit/notify", "204"): 1, ("other", "204"): 1}


def _settlement(statements: float, calls: float = 2) -> Reading:
    step = "/pay.Service/Pay"
    return Reading(
        {
            ("pc", "grpc_served", (("method", step), ("outcome", "OK"))): calls,
            ("pc", "statements", (("origin", step), ("service", "pc"), ("verb", "SELECT"))): statements,
            ("pc", "transactions", (("origin", step), ("service", "pc"))): 2 * calls,
            ("pc", "statements", (("origin", "background"), ("service", "pc"), ("verb", "SELECT"))): 99,
            ("pc", "grpc_served", (("method", "/grpc.health.v1.Health/Check"), ("outcome", "OK"))): 5,
        }
    )


def test_steps_are_per_call_and_leave_out_background_work_and_probes() -> None:
    steps = steps_of(_settlement(statements=10))
    assert steps == {"pc": {"/pay.Service/Pay": {"calls": 2, "statements": 10, "transactions": 4}}}
    assert per_call(steps) == {"pc": {"/pay.Service/Pay": {"statements": 5.0, "transactions": 2.0}}}


def test_a_step_over_its_budget_is_named_and_one_within_it_is_not() -> None:
    budget = {"pc": {"/pay.Service/Pay": {"statements": 5.0, "transactions": 2.0}}}
    assert overruns(steps_of(_settlement(statements=10)), budget) == []
    assert overruns(steps_of(_settlement(statements=12)), budget) == [
        Overrun("pc", "/pay.Service/Pay", "statements", 5, 6.0)
    ]


def test_a_step_the_budget_does_not_know_has_none() -> None:
    found = overruns(steps_of(_settlement(statements=2)), {})
    assert [(o.step, o.measure, o.allowed) for o in found] == [
        ("/pay.Service/Pay", "statements", 0),
        ("/pay.Service/Pay", "transactions", 0),
    ]


def test_a_mean_in_the_budget_is_rounded_up() -> None:
    budget = {"pc": {"/pay.Service/Pay": {"statements": 4.5, "transactions": 2.0}}}
    assert overruns(steps_of(_settlement(statements=10)), budget) == []


def test_the_exposition_reads_back() -> None:
    key = ("unit-exposition", "SELECT", "background")
    metrics.SQL_STATEMENTS.inc(key)
    reading = parse("svc", _exposition())
    assert _only(reading, "unit-exposition", "statements", "verb") == {"SELECT": 1.0}
