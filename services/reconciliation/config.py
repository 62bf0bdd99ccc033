"""reconciliation settings: the mesh-wide ones plus how runs read their sources and are executed."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from services.runtime.config import MeshSettings

SERVICE_NAME = "reconciliation"


class ReconciliationSettings(MeshSettings):
    """Read once at boot from MEDPAY_* (this service's knobs are MEDPAY_RECONCILIATION_*)."""

    # The channels whose bills a run reads, through payment-core's ExportChannelBill (payment-core
    # holds the merchant keys and speaks the channel protocols; one it does not offer is skipped).
    reconciliation_bill_channels: tuple[Literal["WECHAT_PAY", "ALIPAY"], ...] = ("WECHAT_PAY", "ALIPAY")
    # Rows per ExportTransactions / ExportChannelBill page read from payment-core.
    reconciliation_export_page_size: int = Field(default=500, gt=0, le=1000)
    # 清算类别 sent with every 3201 ("11" 门诊).
    reconciliation_clr_type: str = "11"
    # A run is a job of this process. RunReconciliation waits for it at most this long (less when
    # the caller's deadline is nearer), then answers it RUNNING for the caller to poll.
    reconciliation_answer_within_s: float = Field(default=30.0, ge=0)
    # The lease of a RUNNING run: its holder renews it every renew_s while it works; a run whose
    # lease ran out (its process died) is taken over by the sweep, run every takeover_interval_s
    # and at start-up, and executed again, max_attempts executions in all before it ends FAILED.
    reconciliation_lease_s: float = Field(default=20.0, gt=0)
    reconciliation_lease_renew_s: float = Field(default=5.0, gt=0)
    reconciliation_takeover_interval_s: float = Field(default=5.0, gt=0)
    reconciliation_max_attempts: int = Field(default=3, ge=1)
    # Pause before an attempt that raised is tried again (a source that failed is not: that run fails).
    reconciliation_retry_after_s: float = Field(default=1.0, ge=0)
    # Runs executed at the same time by one process; the others wait their turn, leases renewed.
    reconciliation_max_concurrent_runs: int = Field(default=2, ge=1)
    # One execution running longer than this is stopped and counts as a failed attempt.
    reconciliation_attempt_limit_s: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _leases_outlive_their_renewals(self) -> Self:
        if self.reconciliation_lease_renew_s >= self.reconciliation_lease_s:
            raise ValueError("MEDPAY_RECONCILIATION_LEASE_RENEW_S must be less than ..._LEASE_S")
        return self

    @property
    def grpc_address(self) -> str:
        return self.address(self.reconciliation_port)
