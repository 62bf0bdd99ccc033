"""Run the simulator as its own process on 127.0.0.1:$MEDPAY_ALIPAY_SIM_PORT (default 9103)."""

from __future__ import annotations

from infra.simulators.alipay.app import build_asgi_app
from infra.simulators.alipay.simulator import AlipaySimSettings, AlipaySimulator, SimulatorConfig
from infra.simulators.serving import run_simulator

SERVICE_NAME = "alipay-sim"


def main() -> None:
    settings = AlipaySimSettings()
    run_simulator(
        SERVICE_NAME,
        settings,
        settings.alipay_sim_port,
        lambda: build_asgi_app(AlipaySimulator(SimulatorConfig.from_settings(settings))),
    )


if __name__ == "__main__":
    main()
