"""The simulator's own knobs (MEDPAY_NHSA_SIM_*), next to the mesh-wide MeshSettings."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.config import MeshSettings


class NhsaSimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDPAY_NHSA_SIM_", extra="ignore", populate_by_name=True)

    # The SQLite file; unset means data_dir/nhsa_sim.sqlite3.
    db: Path | None = None
    # The TIF gateway token shared with the hospital (env MEDPAY_NHSA_PAAS_TOKEN, as for the client).
    paas_token: str = Field(
        default="medpay-local-paas-token",
        validation_alias=AliasChoices("MEDPAY_NHSA_PAAS_TOKEN", "MEDPAY_NHSA_SIM_PAAS_TOKEN"),
        repr=False,
    )
    admdvs: str = "350100"  # the insurer's own region: 就医地 and 参保地 of the seeded population
    hospital_level: int = Field(default=3, ge=1, le=3)  # the level of the hospital it serves
    population: int = Field(default=500, ge=0)  # insured people seeded on first start
    latency_ms: int = Field(default=0, ge=0)  # added to every transaction, to imitate the real platform
    hang_s: float = Field(default=30.0, gt=0)  # how long a timeout/unknown fault keeps the caller waiting
    sign_in_ttl_s: int = Field(default=86_400, gt=0)

    def database_path(self, mesh: MeshSettings) -> Path:
        return self.db if self.db is not None else mesh.data_dir / "nhsa_sim.sqlite3"
