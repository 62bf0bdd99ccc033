"""Typed configuration from the environment, read once at boot.

Every service reads the shared `MEDPAY_*` settings plus its own `MEDPAY_<SERVICE>_*` ones.
A missing or malformed setting fails at boot, not at the first RPC.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeshSettings(BaseSettings):
    """Settings every process of the mesh shares (simulators included)."""

    model_config = SettingsConfigDict(env_prefix="MEDPAY_", extra="ignore")

    # A PostgreSQL URL (postgresql+asyncpg://...) puts every service in its own schema of that
    # database; unset means one SQLite file per service under data_dir (the laptop default).
    database_url: str | None = None
    # Connections each service keeps open to PostgreSQL (plus half as many more under a burst;
    # four services at 16 + 8 stay within PostgreSQL's default max_connections of 100).
    # Sized for the load it serves: a pool that is too small opens and closes a connection per
    # burst request, each costing a TCP and TLS-attempt handshake, authentication and type lookups.
    db_pool_size: int = Field(default=16, ge=1, le=200)
    data_dir: Path = Path("var/data")
    trace_dir: Path = Path("var/traces")
    log_level: str = "INFO"
    log_dir: Path | None = None
    host: str = "127.0.0.1"
    # Ports of the mesh, documented in the README.
    payment_core_port: int = 50051
    insurance_adapter_port: int = 50052
    reconciliation_port: int = 50053
    data_aggregation_port: int = 50054
    payment_core_notify_port: int = 8081
    # Prometheus /metrics of each service (services.runtime.metrics); 0 = not served.
    payment_core_metrics_port: int = Field(default=0, ge=0, le=65535)
    insurance_adapter_metrics_port: int = Field(default=0, ge=0, le=65535)
    reconciliation_metrics_port: int = Field(default=0, ge=0, le=65535)
    data_aggregation_metrics_port: int = Field(default=0, ge=0, le=65535)
    nhsa_sim_port: int = 9101
    wechatpay_sim_port: int = 9102
    alipay_sim_port: int = 9103
    # Deadline of an outbound call to another service of the mesh, unless the service sets its own.
    default_deadline_s: float = Field(default=10.0, gt=0)
    # Ceiling on the time any inbound call may spend on outbound calls (and the budget of a caller
    # that sent no deadline); each outbound call is also bounded by its own deadline.
    max_deadline_s: float = Field(default=60.0, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    # Every process refreshes its row in service_instances this often; a process whose row is
    # older than instance_dead_after_s (or gone) is dead, and a retry takes over the requests it
    # held at once (services.runtime.instances). Keep dead_after a few heartbeats long.
    instance_heartbeat_s: float = Field(default=2.0, gt=0)
    instance_dead_after_s: float = Field(default=6.0, gt=0)
    migrate_on_start: bool = True

    @model_validator(mode="after")
    def _dead_after_outlasts_heartbeats(self) -> MeshSettings:
        if self.instance_dead_after_s <= self.instance_heartbeat_s:
            raise ValueError("MEDPAY_INSTANCE_DEAD_AFTER_S must be longer than MEDPAY_INSTANCE_HEARTBEAT_S")
        return self

    def address(self, port: int) -> str:
        return f"{self.host}:{port}"

    def metrics_address(self, service: str) -> str | None:
        """host:port of the service's /metrics (MEDPAY_<SERVICE>_METRICS_PORT), None when off."""
        port = int(getattr(self, f"{service.replace('-', '_')}_metrics_port"))
        return self.address(port) if port else None

    def database_for(self, service: str) -> tuple[str, str | None]:
        """(url, schema) for one service: its own schema on PostgreSQL, its own file on SQLite."""
        if self.database_url:
            return self.database_url, service.replace("-", "_")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{self.data_dir / service.replace('-', '_')}.sqlite3", None
