"""What every handler needs, wired once by the composition root (bootstrap.build)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.payment_core.adapters.channels.deposit import DepositChannel
from services.payment_core.adapters.channels.ports import ChannelUnavailable, PaymentChannel, WindowChannel
from services.payment_core.adapters.channels.window import window_channels
from services.payment_core.adapters.insurance import InsurancePort
from services.payment_core.adapters.unit_of_work import UnitOfWorkFactory
from services.runtime.clock import new_id, utcnow

# (channel, method) pairs this release collects cash through, when the channel is configured.
OFFERED_METHODS = frozenset({
    ("WECHAT_PAY", "NATIVE_QR"), ("WECHAT_PAY", "JSAPI"), ("WECHAT_PAY", "BARCODE"),
    ("ALIPAY", "NATIVE_QR"), ("ALIPAY", "BARCODE"),
    ("CASH", "CASH"), ("POS", "POS"), ("DEPOSIT", "DEPOSIT"),
})  # fmt: skip
# The channel a single-channel composition (`channels` empty) serves.
DEFAULT_CHANNEL = "WECHAT_PAY"


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
    # Every configured channel by the payment standard's name ("WECHAT_PAY", "ALIPAY") and where
    # each posts its notifications. Empty: `channel` alone serves WECHAT_PAY at `notify_url`.
    channels: Mapping[str, PaymentChannel] = field(default_factory=dict)
    notify_urls: Mapping[str, str] = field(default_factory=dict)
    # The window channels (CASH, POS): in-process, nothing to configure, in every composition.
    window: Mapping[str, WindowChannel] = field(default_factory=window_channels)
    # The hospital deposit (预交金): in-process, its book is this service's storage.
    deposit: DepositChannel = field(default_factory=DepositChannel)

    def offers(self, channel: str) -> bool:
        if channel in self.window or channel == self.deposit.name:
            return True
        return channel in self.channels if self.channels else channel == DEFAULT_CHANNEL

    def window_channel(self, channel: str) -> WindowChannel:
        try:
            return self.window[channel]
        except KeyError:
            raise ChannelUnavailable(f"{channel} is not a window channel of this process") from None

    def channel_for(self, channel: str) -> PaymentChannel:
        """The adapter of a payment's channel. One not configured in this process (e.g. restarted
        without Alipay while an Alipay payment is open) is unavailable: nothing is sent, the step
        is tried again on its schedule."""
        if channel in self.window:
            return self.window[channel]
        if channel == self.deposit.name:
            return self.deposit
        if not self.channels:
            return self.channel
        try:
            return self.channels[channel]
        except KeyError:
            raise ChannelUnavailable(f"channel {channel} is not configured in this process") from None

    def notify_url_for(self, channel: str) -> str:
        return self.notify_urls.get(channel, self.notify_url)
