"""Round trips per step of a settlement, and the budget a regression test holds them to.

A *step* is one call a service serves while a settlement goes through it (a gRPC method, or the
channel's notification on payment-core's notify route), with everything that call does and
spawns: e.g. payment-core's `PayPaymentOrder`, insurance-adapter's `Presettle`. The services count
each SQL statement and transaction under the step it belongs to (services.runtime.metrics), so
the count of a step per call is exact whatever else the process is doing. The process's own loops
(`background`) and the event feeds' pages are not steps of a settlement: they are left out.

`bench/budget.json` holds, per service and step, the statements and transactions per call that
the bench last measured for an insured settlement with the cash share paid by WeChat, at 1 in
flight; tests/integration/test_round_trip_budget.py fails when a step needs more. Refresh it
with `make budget` (python -m bench.settlement --budget-only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from infra.local.scrape import Reading
from services.runtime.metrics import BACKGROUND

BUDGET_PATH = Path(__file__).with_name("budget.json")
MEASURES = ("statements", "transactions")
# Origins that are not steps of a settlement.
_NOT_STEPS = (BACKGROUND, "/medpay.events.v1.EventFeedService/")

# service -> step -> measure -> count
Steps = dict[str, dict[str, dict[str, float]]]


def steps_of(delta: Reading) -> Steps:
    """Calls, statements and transactions of each step of each service, over a reading's span."""
    steps: Steps = {}
    services = {service for service, _, _ in delta.values}
    for service in sorted(services):
        statements = delta.by_label(service, "statements", "origin")
        transactions = delta.by_label(service, "transactions", "origin")
        calls = {**delta.by_label(service, "grpc_served", "method"), **_routes(delta, service)}
        for origin in sorted(set(statements) | set(transactions)):
            counts = {
                "calls": calls.get(origin, 0.0),
                "statements": statements.get(origin, 0.0),
                "transactions": transactions.get(origin, 0.0),
            }
            if not origin.startswith(_NOT_STEPS) and any(counts.values()):
                steps.setdefault(service, {})[origin] = counts
    return steps


def _routes(delta: Reading, service: str) -> dict[str, float]:
    return delta.by_label(service, "http_served", "route")


def per_call(steps: Steps) -> Steps:
    """Statements and transactions per call of each step (what the budget holds)."""
    return {
        service: {step: per_call_of(counts) for step, counts in by_step.items() if counts["calls"]}
        for service, by_step in steps.items()
    }


def described(steps: Steps, settled: int) -> Steps:
    """Calls per settlement, and statements and transactions per call, of each step."""
    return {
        service: {
            step: {
                "calls_per_op": round(counts["calls"] / settled, 2),
                **{f"{measure}_per_call": value for measure, value in per_call_of(counts).items()},
            }
            for step, counts in by_step.items()
        }
        for service, by_step in steps.items()
    }


def per_call_of(counts: dict[str, float]) -> dict[str, float]:
    calls = counts["calls"]
    return {measure: round(counts[measure] / calls, 2) if calls else 0.0 for measure in MEASURES}


@dataclass(frozen=True)
class Overrun:
    service: str
    step: str
    measure: str
    allowed: int
    observed: float

    def __str__(self) -> str:
        return f"{self.service} {self.step}: {self.observed:g} {self.measure} per call, budget {self.allowed}"


def overruns(steps: Steps, budget: Steps) -> list[Overrun]:
    """Where a step's statements or transactions per call exceed the budget (rounded up: the
    bench's figure is a mean over its batch). A step the budget does not know has a budget of 0."""
    found = []
    for service, by_step in per_call(steps).items():
        for step, counts in by_step.items():
            allowed = budget.get(service, {}).get(step, {})
            for measure in MEASURES:
                limit = math.ceil(allowed.get(measure, 0.0) - 1e-9)
                if counts[measure] > limit:
                    found.append(Overrun(service, step, measure, limit, counts[measure]))
    # A step that ran without being served (work outside any call of its kind) has no per-call
    # figure: it must not hide statements.
    for service, by_step in steps.items():
        for step, counts in by_step.items():
            if not counts["calls"] and (counts["statements"] or counts["transactions"]):
                found.append(Overrun(service, step, "statements without a call", 0, counts["statements"]))
    return found


def load_budget(path: Path = BUDGET_PATH) -> tuple[str, Steps]:
    """(database the budget was measured on, steps)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["database"]), data["steps"]


def write_budget(per_call_steps: Steps, database: str, written: str, path: Path = BUDGET_PATH) -> None:
    """Write the budget: `per_call_steps` as `per_call` gives them."""
    document = {
        "about": "SQL statements and transactions per call of each step of one insured settlement "
        "(cash share by WeChat), counted by the services, measured by the bench at 1 in flight. "
        "tests/integration/test_round_trip_budget.py fails when a step needs more. "
        "Refresh: make budget",
        "database": database,
        "written": written,
        "steps": per_call_steps,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
