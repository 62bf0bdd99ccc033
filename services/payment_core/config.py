"""payment-core settings: the mesh's MEDPAY_* plus MEDPAY_PAYMENT_CORE_*; read once at boot.

The WeChat Pay keys and gateway are the channel adapter's own settings (MEDPAY_WECHATPAY_*, see
adapters/channels/wechatpay.py): MEDPAY_WECHATPAY_KEY_DIR, MEDPAY_WECHATPAY_GATEWAY_URL.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.runtime.config import MeshSettings

NOTIFY_PATH = "/notify/wechatpay"
ALIPAY_NOTIFY_PATH = "/notify/alipay"


class PaymentCoreSettings(MeshSettings):
    # "wechatpay" (the SDK against the simulator or the real gateway) or "fake" (in memory, for a
    # laptop demo without keys).
    payment_core_channel: Literal["wechatpay", "fake"] = "wechatpay"
    # Alipay as a second channel (MEDPAY_ALIPAY_* settings: key dir, gateway URL); with
    # payment_core_channel "fake" it is an in-memory fake too. Its notifications come to
    # MEDPAY_PAYMENT_CORE_ALIPAY_NOTIFY_URL, default this process's /notify/alipay.
    payment_core_alipay: bool = False
    payment_core_alipay_notify_url: str | None = None
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
    # An order unpaid this long after creation is closed (its attempts closed at the channel after
    # a query shows them unpaid, then 2205 for an insured pre-settlement).
    payment_core_order_ttl_s: float = Field(default=1800, ge=5, le=7 * 24 * 3600)
    # The process manager's schedule (domain/process.py Schedule): the first query of a placed
    # payment with no notification, the first retry delay after an inconclusive answer (later ones
    # double up to an hour, with up to 20 % jitter), and the inconclusive answers about a settlement
    # or a refund before the order is handed to a person (NEEDS_ATTENTION with the reason).
    payment_core_first_query_s: float = Field(default=10.0, gt=0, le=600)
    payment_core_retry_base_s: float = Field(default=5.0, gt=0, le=600)
    payment_core_max_attempts: int = Field(default=20, ge=1, le=1000)
    # A code payment (付款码) waiting for the patient's password: queried this often, and reversed
    # once this long has passed (never sooner than 15 s after the payment call: WeChat Pay's rule).
    payment_core_code_payment_query_s: float = Field(default=5.0, gt=0, le=60)
    payment_core_code_payment_window_s: float = Field(default=30.0, ge=15, le=600)
    # The janitor: how often it looks for due orders, and how many it advances at once.
    payment_core_janitor_interval_s: float = Field(default=1.0, gt=0, le=60)
    payment_core_janitor_concurrency: int = Field(default=8, ge=1, le=256)
    # A step's lease on its order: longer than any outbound deadline (a dead holder's lease is
    # taken over as soon as its instance stops heart-beating).
    payment_core_step_lease_s: float = Field(default=60.0, ge=5, le=600)
    # What becomes of a success that arrives after the order was closed: refunded to its channel.
    payment_core_late_success: Literal["refund"] = "refund"
    # ExportChannelBill: how long after a business day begins (00:00 Asia/Shanghai) the channels
    # publish its bill. The real WeChat Pay and Alipay publish T+1 around 10:00, i.e. 122400; the
    # simulators bill a day as it happens, so 0 (any day that has begun). Earlier: BILL_NOT_READY.
    payment_core_bill_published_after_s: float = Field(default=0.0, ge=0, le=7 * 24 * 3600)

    def notify_url(self) -> str:
        return (
            self.payment_core_notify_url or f"http://{self.host}:{self.payment_core_notify_port}{NOTIFY_PATH}"
        )

    def alipay_notify_url(self) -> str:
        own = f"http://{self.host}:{self.payment_core_notify_port}{ALIPAY_NOTIFY_PATH}"
        return self.payment_core_alipay_notify_url or own
