"""Start and stop the whole mesh as real OS processes on loopback, for tests and benchmarks.

The process list is the Procfile's (one source of truth with `make demo`, which runs it under
honcho). Each run gets its own working folder, free ports, and optionally a PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROCFILE = Path(__file__).with_name("Procfile")
REPO_ROOT = Path(__file__).resolve().parents[2]
GRPC_SERVICES = ("insurance-adapter", "payment-core", "reconciliation", "data-aggregation")
PORT_SETTINGS = {
    "payment-core": "MEDPAY_PAYMENT_CORE_PORT",
    "insurance-adapter": "MEDPAY_INSURANCE_ADAPTER_PORT",
    "reconciliation": "MEDPAY_RECONCILIATION_PORT",
    "data-aggregation": "MEDPAY_DATA_AGGREGATION_PORT",
    "payment-core-notify": "MEDPAY_PAYMENT_CORE_NOTIFY_PORT",
    "nhsa-sim": "MEDPAY_NHSA_SIM_PORT",
    "wechatpay-sim": "MEDPAY_WECHATPAY_SIM_PORT",
    "alipay-sim": "MEDPAY_ALIPAY_SIM_PORT",
    # Each service's Prometheus /metrics (services.runtime.metrics), for tests and the bench.
    **{f"{name}-metrics": f"MEDPAY_{name.upper().replace('-', '_')}_METRICS_PORT" for name in GRPC_SERVICES},
}


def procfile_commands(path: Path = PROCFILE) -> dict[str, list[str]]:
    commands: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            argv = command.split()
            commands[name.strip()] = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    return commands


# Listening ports come from below the kernel's ephemeral range (32768-60999 by default): a port the
# kernel hands out for bind(0) can meanwhile become the source port of some outbound connection
# (a service's own connection to PostgreSQL, say), and the server meant to listen there then fails
# with "Address already in use". Picked at random, and never twice by one process.
_LISTEN_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(1000):
        port = random.choice(_LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {_LISTEN_PORTS.start} and {_LISTEN_PORTS.stop}")


@dataclass
class MeshLayout:
    workdir: Path
    database_url: str | None = None
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PORT_SETTINGS})
    extra_env: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPAY_")}
        env.update(
            MEDPAY_HOST="127.0.0.1",
            MEDPAY_DATA_DIR=str(self.workdir / "data"),
            MEDPAY_TRACE_DIR=str(self.workdir / "traces"),
            MEDPAY_WECHATPAY_KEY_DIR=str(self.workdir / "keys"),
            MEDPAY_ALIPAY_KEY_DIR=str(self.workdir / "keys" / "alipay"),
            MEDPAY_PAYMENT_CORE_ALIPAY="true",
            MEDPAY_ALIPAY_SIM_TRADE_CREATED_ON_SCAN="true",  # as the real gateway does
            MEDPAY_NHSA_BASE_URL=f"http://127.0.0.1:{self.ports['nhsa-sim']}",
            MEDPAY_WECHATPAY_BASE_URL=f"http://127.0.0.1:{self.ports['wechatpay-sim']}",
            PYTHONUNBUFFERED="1",
            NO_PROXY="127.0.0.1,localhost",
        )
        env.update({PORT_SETTINGS[name]: str(port) for name, port in self.ports.items()})
        if self.database_url:
            env["MEDPAY_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def grpc_address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def http_base(self, simulator: str) -> str:
        return f"http://127.0.0.1:{self.ports[simulator]}"

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[f'{service}-metrics']}/metrics"


class MeshProcesses:
    """The running mesh: one OS process per Procfile line, logs under workdir/logs/."""

    def __init__(self, layout: MeshLayout) -> None:
        self.layout = layout
        self.commands = procfile_commands()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def make_keys(self) -> None:
        """Both channels' keys, before any process starts: payment-core reads them at boot."""
        keys = self.layout.workdir / "keys"
        for module, directory in (("wechatpay", keys), ("alipay", keys / "alipay")):
            subprocess.run(
                [sys.executable, "-m", f"infra.simulators.{module}.keys", "--dir", str(directory)],
                check=True,
                cwd=REPO_ROOT,
                env=self.layout.environment(),
                stdout=subprocess.DEVNULL,
            )

    def start_process(self, name: str) -> None:
        logs = self.layout.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                self.commands[name],
                cwd=REPO_ROOT,
                env=self.layout.environment(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout_s: float = 60.0) -> None:
        self.make_keys()
        for name in self.commands:
            self.start_process(name)
        await self.wait_ready(list(self.commands), timeout_s)

    async def wait_ready(self, names: list[str], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            while not await self._is_ready(name):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout_s}s:\n{self.log_tail(name)}")
                await asyncio.sleep(0.1)

    async def _is_ready(self, name: str) -> bool:
        if name in GRPC_SERVICES:
            return await grpc_serving(self.layout.grpc_address(name))
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(f"{self.layout.http_base(name)}/sim/health")).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.layout.workdir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop_process(self, name: str, sig: int = signal.SIGTERM, wait_s: float = 15.0) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            return process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)

    async def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.stop_process(name, sig)
        self.start_process(name)
        await self.wait_ready([name])

    def stop(self) -> dict[str, int | None]:
        return {name: self.stop_process(name) for name in reversed(list(self.processes))}


async def grpc_serving(address: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False
