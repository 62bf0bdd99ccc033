"""Composition of the simulator: settings, keys, store, gateway rules, faults, bills, notifier,
refund desk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field

from infra.simulators.delivery import NotificationPost, notification_post
from infra.simulators.key_files import load_private_key, load_public_key
from infra.simulators.wechatpay.bill import BillDesk
from infra.simulators.wechatpay.codepay import REVERSE_NOT_BEFORE_S, CodePayDesk
from infra.simulators.wechatpay.faults import FaultBook
from infra.simulators.wechatpay.gateway import Clock, Merchant, SimulatedGateway, utc_now
from infra.simulators.wechatpay.keys import WechatKeyPaths, ensure_keys, read_text
from infra.simulators.wechatpay.notifier import Notifier, Sleep, delivery_schedule
from infra.simulators.wechatpay.refund_desk import DEFAULT_REFUND_DELAY_S, REFUND_MODES, RefundDesk
from infra.simulators.wechatpay.signing import MerchantVerifier, PlatformSigner
from infra.simulators.wechatpay.store import SimStore
from services.runtime.config import MeshSettings


class WechatPaySimSettings(MeshSettings):
    """On top of the mesh-wide settings:

    MEDPAY_WECHATPAY_KEY_DIR            the key set (default var/keys)
    MEDPAY_WECHATPAY_SIM_DB             its SQLite file (default <MEDPAY_DATA_DIR>/wechatpay_sim.sqlite3)
    MEDPAY_WECHATPAY_SIM_TIME_SCALE     multiplies every simulated wait: notification resends and the
                                        refund delay (default 1.0, real time; 0.01 makes 15 s 150 ms)
    MEDPAY_WECHATPAY_SIM_REFUND_MODE    "processing" (default, as the real gateway: PROCESSING in the
                                        answer, SUCCESS + REFUND.SUCCESS later) or "sync" (SUCCESS in
                                        the answer)
    MEDPAY_WECHATPAY_SIM_REFUND_DELAY_S simulated seconds a refund stays PROCESSING (default 5)
    """

    wechatpay_key_dir: Path = Path("var/keys")
    wechatpay_sim_db: Path | None = None
    wechatpay_sim_time_scale: float = Field(default=1.0, gt=0)
    wechatpay_sim_refund_mode: Literal["processing", "sync"] = "processing"
    wechatpay_sim_refund_delay_s: float = Field(default=DEFAULT_REFUND_DELAY_S, ge=0)

    def sim_db_path(self) -> Path:
        return self.wechatpay_sim_db or self.data_dir / "wechatpay_sim.sqlite3"


@dataclass(frozen=True)
class SimulatorConfig:
    key_dir: Path
    db_path: Path
    time_scale: float = 1.0
    refund_mode: str = "processing"
    refund_delay_s: float = DEFAULT_REFUND_DELAY_S  # simulated seconds, times time_scale
    # The docs' "not sooner than 15 s after the payment call" for a reverse, times time_scale.
    reverse_not_before_s: float = REVERSE_NOT_BEFORE_S
    clock: Clock = utc_now
    # Tests may route notifications through an in-memory transport instead of the network, and
    # hold the simulated waits (resends, refund delays) with their own sleep.
    notify_transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.time_scale <= 0 or self.refund_delay_s < 0 or self.refund_mode not in REFUND_MODES:
            raise ValueError("time_scale > 0, refund_delay_s >= 0, refund_mode processing or sync")

    @classmethod
    def from_settings(cls, settings: WechatPaySimSettings) -> SimulatorConfig:
        return cls(
            key_dir=settings.wechatpay_key_dir,
            db_path=settings.sim_db_path(),
            time_scale=settings.wechatpay_sim_time_scale,
            refund_mode=settings.wechatpay_sim_refund_mode,
            refund_delay_s=settings.wechatpay_sim_refund_delay_s,
        )

    def delivery_schedule(self) -> tuple[float, ...]:
        """WeChat Pay's resend schedule on this simulator's clock."""
        return delivery_schedule(self.time_scale)


class WechatPaySimulator:
    """Everything the HTTP layer needs; `start`/`stop` run inside the ASGI lifespan."""

    def __init__(self, config: SimulatorConfig) -> None:
        keys = ensure_keys(config.key_dir)
        self.config = config
        self.merchant = Merchant(mchid=read_text(keys.mchid), appid=read_text(keys.appid))
        self.verifier = MerchantVerifier(
            self.merchant.mchid, load_public_key(keys.merchant_public_key), read_text(keys.merchant_serial_no)
        )
        self.signer = PlatformSigner(
            load_private_key(keys.platform_private_key), read_text(keys.public_key_id)
        )
        self.apiv3_key = read_text(keys.apiv3_key)
        self.faults = FaultBook()
        self.bills = BillDesk()
        self._keys = keys
        self._store: SimStore | None = None
        self._gateway: SimulatedGateway | None = None
        self._notifier: Notifier | None = None
        self._refund_desk: RefundDesk | None = None
        self._codepay: CodePayDesk | None = None
        self._post: NotificationPost | None = None

    @property
    def keys(self) -> WechatKeyPaths:
        return self._keys

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
    def codepay(self) -> CodePayDesk:
        if self._codepay is None:
            raise RuntimeError("simulator not started")
        return self._codepay

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("simulator not started")
        return self._notifier

    @property
    def refund_desk(self) -> RefundDesk:
        if self._refund_desk is None:
            raise RuntimeError("simulator not started")
        return self._refund_desk

    async def start(self) -> None:
        self._store = SimStore(self.config.db_path)
        self._gateway = SimulatedGateway(self._store, self.merchant, self.config.clock)
        reverse_after = self.config.reverse_not_before_s * self.config.time_scale
        self._codepay = CodePayDesk(self._store, self.merchant, self.config.clock, reverse_after)
        self._post = notification_post(self.config.notify_transport)
        self._notifier = Notifier(
            self._post,
            self.signer,
            self.apiv3_key,
            self._store,
            self.faults,
            self.config.clock,
            self.config.delivery_schedule(),
            self.config.sleep,
        )
        self._refund_desk = RefundDesk(
            self._gateway,
            self._notifier,
            self.config.clock,
            self.config.refund_mode,
            self.config.refund_delay_s * self.config.time_scale,
            self.config.sleep,
        )
        self._refund_desk.start()

    async def stop(self) -> None:
        """Refunds in flight stop first (they would notify), then every waiting delivery."""
        desk, notifier, post, store = self._refund_desk, self._notifier, self._post, self._store
        self._refund_desk, self._notifier, self._post = None, None, None
        self._store, self._gateway, self._codepay = None, None, None
        if desk is not None:
            await desk.close()
        if notifier is not None:
            await notifier.close()
        if post is not None:
            await post.aclose()
        if store is not None:
            store.close()
