"""Starting and stopping the local mesh: keys, a clean trace directory, honcho with the Procfile,
and waiting until every service answers its gRPC health check and every simulator /sim/health."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from medpay.client import MedPayClient

from services.runtime.config import MeshSettings

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "infra" / "local" / "Procfile"
STOP_GRACE_S = 20.0


class MeshFailed(RuntimeError):
    """The mesh did not come up (or went down); the log file says why."""


def make_keys(key_dir: Path) -> None:
    """The simulated WeChat Pay merchant keys and Alipay app keys (under alipay/), created once (a
    no-op when they exist)."""
    for module, directory in (("wechatpay", key_dir), ("alipay", key_dir / "alipay")):
        command = [sys.executable, "-m", f"infra.simulators.{module}.keys", "--dir", str(directory)]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def clear_traces(trace_dir: Path) -> None:
    """Span files are appended to by every process: start each demo with none."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    for spans in trace_dir.glob("*.jsonl"):
        spans.unlink()


SERVICE_SCHEMAS = ("payment_core", "insurance_adapter", "reconciliation", "data_aggregation")


def start_fresh(data_dir: Path, database_url: str | None) -> None:
    """A self-contained morning: the services' and simulators' SQLite files go, and on PostgreSQL
    the four services' schemas are dropped (the simulators' state lives under data_dir either
    way, so keeping one side and not the other would make reconciliation report the difference)."""
    for database_file in data_dir.glob("*.sqlite3*"):
        database_file.unlink()
    if database_url:
        asyncio.run(_drop_service_schemas(database_url))


async def _drop_service_schemas(database_url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        for schema in SERVICE_SCHEMAS:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def mesh_environment(settings: MeshSettings, key_dir: Path, database_url: str | None) -> dict[str, str]:
    """The processes' environment: SQLite files unless a database URL is given, this venv's python
    first on PATH (the Procfile says `python -m ...`), unbuffered logs."""
    env = dict(os.environ)
    env.pop("MEDPAY_DATABASE_URL", None)
    if database_url:
        env["MEDPAY_DATABASE_URL"] = database_url
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["MEDPAY_TRACE_DIR"] = str(settings.trace_dir)
    env["MEDPAY_WECHATPAY_KEY_DIR"] = str(key_dir)
    env["MEDPAY_ALIPAY_KEY_DIR"] = str(key_dir / "alipay")
    env.setdefault("MEDPAY_PAYMENT_CORE_ALIPAY", "true")
    env.setdefault("MEDPAY_ALIPAY_SIM_TRADE_CREATED_ON_SCAN", "true")  # as the real gateway does
    env["NO_PROXY"] = "127.0.0.1,localhost"
    nhsa_url, wechat_url, _ = simulator_urls(settings)
    env.setdefault("MEDPAY_NHSA_BASE_URL", nhsa_url)
    env.setdefault("MEDPAY_WECHATPAY_BASE_URL", wechat_url)
    return env


@dataclass
class Mesh:
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise MeshFailed(f"honcho exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join([*text.splitlines()[-lines:], f"(whole log: {self.log_path})"])

    def stop(self) -> None:
        """SIGTERM to honcho (it stops every process it started); SIGKILL to its group if stuck."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextmanager
def running_mesh(env: Mapping[str, str], log_path: Path) -> Iterator[Mesh]:
    """honcho running the Procfile for the duration of the block; stopped on any exit, Ctrl-C too.
    honcho gets its own session so a Ctrl-C reaches only us, and we stop it in order."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    honcho = shutil.which("honcho", path=env.get("PATH")) or "honcho"
    command = [honcho, "-f", str(PROCFILE), "-d", str(ROOT), "--no-colour", "start"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    mesh = Mesh(process, log_path)
    try:
        yield mesh
    finally:
        mesh.stop()


async def wait_until_ready(
    mesh: Mesh, client: MedPayClient, simulator_urls: list[str], timeout_s: float = 90.0
) -> None:
    """Every gRPC service SERVING and every simulator's /sim/health answering 200."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        while True:
            mesh.check_alive()
            waiting = await _not_ready(client, http, simulator_urls)
            if not waiting:
                return
            if loop.time() > give_up_at:
                raise MeshFailed(f"not ready after {timeout_s:g}s: {', '.join(waiting)}\n{mesh.log_tail()}")
            await asyncio.sleep(0.5)


async def _not_ready(client: MedPayClient, http: httpx.AsyncClient, simulator_urls: list[str]) -> list[str]:
    statuses = await client.health()
    waiting = [f"{service} {status}" for service, status in statuses.items() if status != "SERVING"]
    for url in simulator_urls:
        try:
            answer = await http.get(f"{url}/sim/health")
        except httpx.HTTPError:
            waiting.append(f"{url} unreachable")
            continue
        if answer.status_code != httpx.codes.OK:
            waiting.append(f"{url} {answer.status_code}")
    return waiting


def simulator_urls(settings: MeshSettings) -> list[str]:
    return [
        f"http://{settings.host}:{port}"
        for port in (settings.nhsa_sim_port, settings.wechatpay_sim_port, settings.alipay_sim_port)
    ]
