"""reconciliation settings: the mesh-wide ones plus where the WeChat Pay bill comes from."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.runtime.config import MeshSettings

SERVICE_NAME = "reconciliation"


class ReconciliationSettings(MeshSettings):
    """Read once at boot from MEDPAY_* (this service's knobs are MEDPAY_RECONCILIATION_*)."""

    # The merchant key files (`python -m infra.simulators.wechatpay.keys --dir var/keys` writes them;
    # with a real merchant the same file names hold the real keys). Read per run, not at boot.
    wechatpay_key_dir: Path = Path("var/keys")
    # The WeChat Pay gateway: the simulator by default, https://api.mch.weixin.qq.com in production.
    wechatpay_base_url: str = "http://127.0.0.1:9102"
    # Rows per ExportTransactions page read from payment-core.
    reconciliation_export_page_size: int = Field(default=500, gt=0, le=1000)
    # 清算类别 sent with every 3201 ("11" 门诊).
    reconciliation_clr_type: str = "11"

    @property
    def grpc_address(self) -> str:
        return self.address(self.reconciliation_port)
