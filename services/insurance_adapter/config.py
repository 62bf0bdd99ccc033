"""insurance-adapter settings: the mesh-wide ones plus how to reach and sign in to the insurer."""

from __future__ import annotations

from pydantic import Field

from services.runtime.config import MeshSettings

SERVICE_NAME = "insurance-adapter"


class InsuranceAdapterSettings(MeshSettings):
    """Read once at boot from MEDPAY_* (the insurer's knobs are MEDPAY_NHSA_*)."""

    # Unset: the local NHSA simulator on MEDPAY_NHSA_SIM_PORT.
    nhsa_base_url: str | None = None
    # The TIF gateway credentials; the token default is the simulator's.
    nhsa_paas_id: str = "medpay-mesh"
    nhsa_paas_token: str = Field(default="medpay-local-paas-token", repr=False)
    # 定点医药机构: the 900th Hospital of the PLA Joint Logistics Support Force, Fuzhou.
    nhsa_fixmedins_code: str = "H35010200901"
    nhsa_fixmedins_name: str = "联勤保障部队第九〇〇医院"
    # 就医地医保区划 (Fuzhou), also the default 参保地 and 清算经办机构.
    nhsa_mdtrtarea_admvs: str = "350100"
    nhsa_opter: str = "medpay"
    nhsa_opter_name: str = "MedPay Mesh"
    # Per-message deadline towards the insurer (further clamped by the caller's own deadline).
    nhsa_timeout_s: float = Field(default=10.0, gt=0)
    # The msgid node of this replica (0-9): give each replica its own and their NHSA msgids can
    # never collide; unset, each process draws one at random.
    nhsa_msgid_node: int | None = Field(default=None, ge=0, le=9)

    @property
    def nhsa_url(self) -> str:
        return self.nhsa_base_url or f"http://127.0.0.1:{self.nhsa_sim_port}"

    @property
    def grpc_address(self) -> str:
        return self.address(self.insurance_adapter_port)
