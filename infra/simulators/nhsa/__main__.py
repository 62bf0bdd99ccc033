"""python -m infra.simulators.nhsa: the NHSA insurance platform simulator as its own process."""

from __future__ import annotations

import asyncio

import uvicorn

from infra.simulators.nhsa.app import build_app
from infra.simulators.nhsa.platform import NhsaPlatform
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.store import NhsaStore
from services.runtime.config import MeshSettings
from services.runtime.logging import configure_logging
from services.runtime.telemetry import configure_tracing


async def serve(mesh: MeshSettings, settings: NhsaSimSettings) -> None:
    store = await NhsaStore.open(settings.database_path(mesh), settings.population)
    try:
        app = build_app(NhsaPlatform(store, settings), settings)
        config = uvicorn.Config(
            app, host=mesh.host, port=mesh.nhsa_sim_port, log_config=None, access_log=False, lifespan="off"
        )
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


def main() -> None:
    mesh = MeshSettings()
    settings = NhsaSimSettings()
    configure_logging("nhsa-sim", mesh.log_level, mesh.log_dir)
    provider = configure_tracing("nhsa-sim", mesh.trace_dir)
    try:
        asyncio.run(serve(mesh, settings))
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
