"""What every handler needs, wired once by the composition root (bootstrap.build)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.payment_core.adapters.channels.ports import PaymentChannel
from services.payment_core.adapters.insurance import InsurancePort
from services.payment_core.service_layer.unit_of_work import UnitOfWorkFactory
from services.runtime.clock import new_id, utcnow

# (channel, method) pairs this release collects cash through.
OFFERED_METHODS = frozenset({("WECHAT_PAY", "NATIVE_QR"), ("WECHAT_PAY", "JSAPI"), ("WECHAT_PAY", "BARCODE")})


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    channel: PaymentChannel
    insurance: InsurancePort
    # Where the channel posts its notifications (this process's notify endpoint, as seen from outside).
    notify_url: str
    # How long a QR code may be paid before the channel closes the order.
    qr_valid_for: timedelta = timedelta(minutes=15)
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[str], str] = field(default=new_id)
