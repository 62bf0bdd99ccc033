"""Run the simulator as its own process on 127.0.0.1:$MEDPAY_WECHATPAY_SIM_PORT (default 9102)."""

from __future__ import annotations

from infra.simulators.serving import run_simulator
from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimSettings, WechatPaySimulator

SERVICE_NAME = "wechatpay-sim"


def main() -> None:
    settings = WechatPaySimSettings()
    run_simulator(
        SERVICE_NAME,
        settings,
        settings.wechatpay_sim_port,
        lambda: build_asgi_app(WechatPaySimulator(SimulatorConfig.from_settings(settings))),
    )


if __name__ == "__main__":
    main()
