"""Composition of the simulator: settings, keys, store, gateway rules, faults, bills, notifier."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import Field

from infra.simulators.alipay.bill import BillDesk
from infra.simulators.alipay.faults import FaultBook
from infra.simulators.alipay.gateway import Clock, SimulatedGateway, utc_now
from infra.simulators.alipay.keys import AlipayKeyPaths, ensure_keys, read_text
from infra.simulators.alipay.notifier import Notifier, Sleep, delivery_schedule
from infra.simulators.alipay.signing import AlipaySigner, AppVerifier
from infra.simulators.alipay.store import SimStore
from infra.simulators.delivery import NotificationPost, notification_post
from infra.simulators.key_files import load_private_key, load_public_key
from services.runtime.config import MeshSettings


class AlipaySimSettings(MeshSettings):
    """On top of the mesh-wide settings:

    MEDPAY_ALIPAY_KEY_DIR         the key set (default var/keys/alipay)
    MEDPAY_ALIPAY_SIM_DB          its SQLite file (default <MEDPAY_DATA_DIR>/alipay_sim.sqlite3)
    MEDPAY_ALIPAY_SIM_TIME_SCALE  multiplies every simulated wait (notification retries);
                                  0.001 turns the 4-minute first retry into 240 ms
    MEDPAY_ALIPAY_SIM_TRADE_CREATED_ON_SCAN  true: a precreated trade is unknown (ACQ.TRADE_NOT_EXIST)
                                  until the patient scans, as on the real gateway (default false)
    """

    alipay_key_dir: Path = Path("var/keys/alipay")
    alipay_sim_db: Path | None = None
    alipay_sim_time_scale: float = Field(default=1.0, gt=0)
    alipay_sim_trade_created_on_scan: bool = False

    def sim_db_path(self) -> Path:
        return self.alipay_sim_db or self.data_dir / "alipay_sim.sqlite3"


@dataclass(frozen=True)
class SimulatorConfig:
    key_dir: Path
    db_path: Path
    time_scale: float = 1.0
    trade_created_on_scan: bool = False
    clock: Clock = utc_now
    notify_transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")

    @classmethod
    def from_settings(cls, settings: AlipaySimSettings) -> SimulatorConfig:
        return cls(
            settings.alipay_key_dir,
            settings.sim_db_path(),
            settings.alipay_sim_time_scale,
            settings.alipay_sim_trade_created_on_scan,
        )


class AlipaySimulator:
    """Everything the HTTP layer needs; `start`/`stop` run inside the ASGI lifespan."""

    def __init__(self, config: SimulatorConfig) -> None:
        keys = ensure_keys(config.key_dir)
        self.config = config
        self.app_id, self.seller_id = read_text(keys.app_id), read_text(keys.seller_id)
        self.verifier = AppVerifier(self.app_id, load_public_key(keys.app_public_key))
        self.signer = AlipaySigner(load_private_key(keys.alipay_private_key))
        self.faults = FaultBook()
        self.bills = BillDesk(config.clock)
        self.keys: AlipayKeyPaths = keys
        self._store: SimStore | None = None
        self._gateway: SimulatedGateway | None = None
        self._notifier: Notifier | None = None
        self._post: NotificationPost | None = None

    @property
    def store(self) -> SimStore:
        if self._store is None:
            raise RuntimeError("simulator not started")
        return self._store

    @property
    def gateway(self) -> SimulatedGateway:
        if self._gateway is None:
            raise RuntimeError("simulator not started")
        return self._gateway

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("simulator not started")
        return self._notifier

    async def start(self) -> None:
        self._store = SimStore(self.config.db_path)
        self._gateway = SimulatedGateway(self._store, self.config.clock, self.config.trade_created_on_scan)
        self._post = notification_post(self.config.notify_transport)
        self._notifier = Notifier(
            self._post,
            self.signer,
            self.app_id,
            self._store,
            self.faults,
            self.config.clock,
            delivery_schedule(self.config.time_scale),
            self.config.sleep,
        )

    async def stop(self) -> None:
        notifier, post, store = self._notifier, self._post, self._store
        self._notifier, self._post, self._store, self._gateway = None, None, None, None
        if notifier is not None:
            await notifier.close()
        if post is not None:
            await post.aclose()
        if store is not None:
            store.close()
