"""Run the simulator as its own process on 127.0.0.1:$MEDPAY_ALIPAY_SIM_PORT (default 9103)."""

from __future__ import annotations

import uvicorn

from infra.simulators.alipay.app import build_asgi_app
from infra.simulators.alipay.simulator import AlipaySimSettings, AlipaySimulator, SimulatorConfig
from services.runtime.logging import configure_logging
from services.runtime.telemetry import configure_tracing, instrument_httpx

SERVICE_NAME = "alipay-sim"


def main() -> None:
    settings = AlipaySimSettings()
    configure_logging(SERVICE_NAME, settings.log_level, settings.log_dir)
    provider = configure_tracing(SERVICE_NAME, settings.trace_dir)
    instrument_httpx()
    simulator = AlipaySimulator(SimulatorConfig.from_settings(settings))
    try:
        uvicorn.run(
            build_asgi_app(simulator),
            host=settings.host,
            port=settings.alipay_sim_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
