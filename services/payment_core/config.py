"""payment-core settings: the mesh's MEDPAY_* plus MEDPAY_PAYMENT_CORE_*; read once at boot.

The WeChat Pay keys and gateway are the channel adapter's own settings (MEDPAY_WECHATPAY_*, see
adapters/channels/wechatpay.py): MEDPAY_WECHATPAY_KEY_DIR, MEDPAY_WECHATPAY_GATEWAY_URL.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.runtime.config import MeshSettings

NOTIFY_PATH = "/notify/wechatpay"


class PaymentCoreSettings(MeshSettings):
    # "wechatpay" (the SDK against the simulator or the real gateway) or "fake" (in memory, for a
    # laptop demo without keys).
    payment_core_channel: Literal["wechatpay", "fake"] = "wechatpay"
    # "grpc" (insurance-adapter at MEDPAY_HOST:MEDPAY_INSURANCE_ADAPTER_PORT) or "fake" (in memory).
    payment_core_insurance: Literal["grpc", "fake"] = "grpc"
    # The URL the channel posts notifications to, as the channel sees it; default: this process's
    # notify endpoint on MEDPAY_HOST:MEDPAY_PAYMENT_CORE_NOTIFY_PORT.
    payment_core_notify_url: str | None = None
    # Address the notify endpoint binds; default MEDPAY_HOST.
    payment_core_notify_bind: str | None = None
    # How long a QR code can be paid before the channel closes the order.
    payment_core_qr_valid_s: int = Field(default=900, ge=60, le=7200)
    # Deadline for calls to insurance-adapter (Presettle is four insurer round trips).
    payment_core_insurer_deadline_s: float = Field(default=20.0, gt=0)
    # The resumer: how often it sweeps, and how long an item must be quiet before it is taken up.
    payment_core_resume_interval_s: float = Field(default=15.0, gt=0)
    payment_core_resume_quiet_s: float = Field(default=30.0, ge=0)

    def notify_url(self) -> str:
        return (
            self.payment_core_notify_url or f"http://{self.host}:{self.payment_core_notify_port}{NOTIFY_PATH}"
        )
