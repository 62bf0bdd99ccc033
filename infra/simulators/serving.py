"""How a channel simulator runs as its own process: logs and traces like a service's, then uvicorn
on loopback until it is stopped."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from services.runtime.config import MeshSettings
from services.runtime.logging import configure_logging
from services.runtime.telemetry import configure_tracing


def run_simulator(name: str, settings: MeshSettings, port: int, app: Callable[[], ASGIApp]) -> None:
    """`app` is built once tracing is configured, so its spans (a notification's included: it
    carries its span's traceparent, infra/simulators/delivery.py) go to the simulator's trace file."""
    configure_logging(name, settings.log_level, settings.log_dir)
    provider = configure_tracing(name, settings.trace_dir)
    try:
        uvicorn.run(app(), host=settings.host, port=port, log_config=None, access_log=False, lifespan="on")
    finally:
        provider.shutdown()
