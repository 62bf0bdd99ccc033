"""Test-wide set-up: which database the tests run on, and a fresh database per session.

PostgreSQL comes from MEDPAY_TEST_DATABASE_URL (an asyncpg URL to any database of a server where
we may CREATE DATABASE), else postgresql+asyncpg://postgres@127.0.0.1:5432/postgres when it answers.
Without one the tests fall back to SQLite and say so; with CI=true that fallback is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class TestDatabase:
    backend: str  # "postgresql" or "sqlite"
    server_url: str | None  # where we create per-session databases

    def describe(self) -> str:
        if self.backend == "postgresql":
            return f"database backend: PostgreSQL ({_hide_password(self.server_url or '')})"
        return "database backend: SQLite (no PostgreSQL reachable; set MEDPAY_TEST_DATABASE_URL to use one)"


def _hide_password(url: str) -> str:
    if "@" not in url or ":" not in url.split("@")[0].split("//")[-1]:
        return url
    head, tail = url.split("@", 1)
    return head.rsplit(":", 1)[0] + ":***@" + tail


async def _answers(url: str) -> bool:
    import asyncpg

    try:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def _resolve() -> TestDatabase:
    url = os.environ.get("MEDPAY_TEST_DATABASE_URL", DEFAULT_POSTGRES)
    if asyncio.run(_answers(url)):
        return TestDatabase("postgresql", url)
    if os.environ.get("CI", "").lower() == "true":
        pytest.exit(f"CI=true but no PostgreSQL answers at {_hide_password(url)}", returncode=3)
    return TestDatabase("sqlite", None)


TEST_DATABASE = _resolve()


def pytest_report_header() -> str:
    return TEST_DATABASE.describe()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(TEST_DATABASE.describe())


@pytest.fixture(scope="session")
def test_database() -> TestDatabase:
    return TEST_DATABASE


async def create_scratch_database(server_url: str) -> str:
    """A new, empty PostgreSQL database; returns its asyncpg URL."""
    import asyncpg

    name = f"medpay_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


async def drop_scratch_database(server_url: str, database_url: str) -> None:
    import asyncpg

    name = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture
async def database_url(tmp_path: os.PathLike[str]) -> AsyncIterator[str]:
    """A fresh database for one test: a scratch PostgreSQL database, or a SQLite file."""
    if TEST_DATABASE.backend == "postgresql" and TEST_DATABASE.server_url:
        url = await create_scratch_database(TEST_DATABASE.server_url)
        try:
            yield url
        finally:
            await drop_scratch_database(TEST_DATABASE.server_url, url)
    else:
        yield f"sqlite+aiosqlite:///{tmp_path}/test.sqlite3"


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests talk to loopback only; a proxy from the environment must not intercept it."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield


# The test meshes' WeChat Pay simulator: WeChat's notification resend schedule on a clock 100 times
# faster (15 s -> 150 ms), and refunds that succeed in the answer, as the flows written before the
# simulator learnt PROCESSING expect (e.g. an insured refund is REFUNDED in RefundPaymentOrder's
# answer). A test wanting the real way arms it per refund: {"operation": "refund", "mode":
# "processing" | "abnormal" | "closed"} on /sim/faults.
TEST_MESH_ENV = {"MEDPAY_WECHATPAY_SIM_TIME_SCALE": "0.01", "MEDPAY_WECHATPAY_SIM_REFUND_MODE": "sync"}


@contextlib.asynccontextmanager
async def running_mesh(workdir: Path, extra_env: dict[str, str] | None = None) -> AsyncIterator[object]:
    """The whole mesh as real OS processes (Procfile), on a scratch PostgreSQL database when one
    is reachable, else on SQLite files; stopped (SIGTERM) and the database dropped afterwards."""
    from infra.local.processes import MeshLayout, MeshProcesses

    database_url = None
    if TEST_DATABASE.backend == "postgresql" and TEST_DATABASE.server_url:
        database_url = await create_scratch_database(TEST_DATABASE.server_url)
    environment = {**TEST_MESH_ENV, **(extra_env or {})}
    processes = MeshProcesses(MeshLayout(workdir=workdir, database_url=database_url, extra_env=environment))
    try:
        await processes.start()
        yield processes
    finally:
        processes.stop()
        if database_url and TEST_DATABASE.server_url:
            await drop_scratch_database(TEST_DATABASE.server_url, database_url)


@pytest.fixture(scope="session")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """The mesh shared by the integration and end-to-end tests."""
    async with running_mesh(tmp_path_factory.mktemp("mesh")) as processes:
        yield processes
