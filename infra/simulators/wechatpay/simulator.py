"""Composition of the simulator: settings, keys, store, gateway rules, faults, bills, notifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from infra.simulators.wechatpay.bill import BillDesk
from infra.simulators.wechatpay.faults import FaultBook
from infra.simulators.wechatpay.gateway import Clock, Merchant, SimulatedGateway, utc_now
from infra.simulators.wechatpay.keys import WechatKeyPaths, ensure_keys, read_text
from infra.simulators.wechatpay.notifier import RETRY_DELAYS_S, Notifier
from infra.simulators.wechatpay.signing import MerchantVerifier, PlatformSigner
from infra.simulators.wechatpay.store import SimStore
from services.runtime.config import MeshSettings


class WechatPaySimSettings(MeshSettings):
    """MEDPAY_WECHATPAY_KEY_DIR (default var/keys) and MEDPAY_WECHATPAY_SIM_DB (default
    <MEDPAY_DATA_DIR>/wechatpay_sim.sqlite3), on top of the mesh-wide settings."""

    wechatpay_key_dir: Path = Path("var/keys")
    wechatpay_sim_db: Path | None = None

    def sim_db_path(self) -> Path:
        return self.wechatpay_sim_db or self.data_dir / "wechatpay_sim.sqlite3"


@dataclass(frozen=True)
class SimulatorConfig:
    key_dir: Path
    db_path: Path
    notify_delays: tuple[float, ...] = RETRY_DELAYS_S
    clock: Clock = utc_now
    # Tests may route notifications through an in-memory transport instead of the network.
    notify_transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)


class WechatPaySimulator:
    """Everything the HTTP layer needs; `start`/`stop` run inside the ASGI lifespan."""

    def __init__(self, config: SimulatorConfig) -> None:
        keys = ensure_keys(config.key_dir)
        self.config = config
        self.merchant = Merchant(mchid=read_text(keys.mchid), appid=read_text(keys.appid))
        self.verifier = MerchantVerifier(self.merchant.mchid, _public_key(keys.merchant_public_key))
        self.signer = PlatformSigner(_private_key(keys.platform_private_key), read_text(keys.public_key_id))
        self.apiv3_key = read_text(keys.apiv3_key)
        self.faults = FaultBook()
        self.bills = BillDesk()
        self._keys = keys
        self._store: SimStore | None = None
        self._gateway: SimulatedGateway | None = None
        self._notifier: Notifier | None = None
        self._client: httpx.AsyncClient | None = None

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
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("simulator not started")
        return self._notifier

    async def start(self) -> None:
        self._store = SimStore(self.config.db_path)
        self._gateway = SimulatedGateway(self._store, self.merchant, self.config.clock)
        # Created here, after instrument_httpx(), so notifications carry the trace.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), transport=self.config.notify_transport)
        self._notifier = Notifier(
            self._client,
            self.signer,
            self.apiv3_key,
            self._store,
            self.faults,
            self.config.clock,
            self.config.notify_delays,
        )

    async def stop(self) -> None:
        notifier, client, store = self._notifier, self._client, self._store
        self._notifier, self._client, self._store, self._gateway = None, None, None, None
        if notifier is not None:
            await notifier.close()
        if client is not None:
            await client.aclose()
        if store is not None:
            store.close()


def _public_key(path: Path) -> rsa.RSAPublicKey:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} is not an RSA public key")
    return key


def _private_key(path: Path) -> rsa.RSAPrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key
