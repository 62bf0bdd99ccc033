"""A serving process keeps what it never uses out of its memory (issue 6, RSS ≤ 120 MB per
service): Alembic is loaded only by the migration child, and httpx's command-line client (click,
rich, pygments) never."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICES = ["payment_core", "insurance_adapter", "reconciliation", "data_aggregation"]
NEVER_LOADED = ["alembic", "mako", "rich", "pygments"]

PROBE = """
import json, sys
from services.runtime.lean import keep_unused_modules_out
keep_unused_modules_out()
import httpx
import services.{service}.bootstrap
print(json.dumps([name for name in {never} if name in sys.modules]))
"""


def run_probe(probe: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", probe]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_process_loads_neither_alembic_nor_the_httpx_command_line(service: str) -> None:
    probe = PROBE.format(service=service, never=NEVER_LOADED)
    done = run_probe(probe)
    assert json.loads(done.stdout) == []


def test_httpx_still_works_without_its_command_line() -> None:
    probe = (
        "from services.runtime.lean import keep_unused_modules_out\n"
        "keep_unused_modules_out()\n"
        "import httpx\n"
        "print(httpx.Request('GET', 'http://127.0.0.1/x').url.path)\n"
    )
    done = run_probe(probe)
    assert done.stdout.strip() == "/x"
