"""Which channel adapter a payment goes through: the registry in payment-core's Dependencies."""

from __future__ import annotations

from typing import Any

import pytest

from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.channels.ports import ChannelUnavailable
from services.payment_core.service_layer.dependencies import Dependencies


def deps(**extra: Any) -> Dependencies:
    return Dependencies(
        uow=None, channel=FakeChannel(), insurance=None, notify_url="https://h/notify/wechatpay", **extra
    )  # type: ignore[arg-type]


def test_a_single_channel_serves_wechat_pay_alone() -> None:
    single = deps()
    assert single.offers("WECHAT_PAY") and not single.offers("ALIPAY")
    assert single.channel_for("WECHAT_PAY") is single.channel
    assert single.notify_url_for("ALIPAY") == "https://h/notify/wechatpay"


def test_each_payment_goes_to_its_own_channel() -> None:
    wechat, alipay = FakeChannel(), FakeChannel()
    registry = deps(
        channels={"WECHAT_PAY": wechat, "ALIPAY": alipay},
        notify_urls={"WECHAT_PAY": "https://h/notify/wechatpay", "ALIPAY": "https://h/notify/alipay"},
    )
    assert registry.offers("ALIPAY") and not registry.offers("UNIONPAY")
    assert (registry.channel_for("WECHAT_PAY"), registry.channel_for("ALIPAY")) == (wechat, alipay)
    assert registry.notify_url_for("ALIPAY") == "https://h/notify/alipay"


def test_a_channel_not_configured_here_is_unavailable_not_a_crash() -> None:
    only_wechat = deps(channels={"WECHAT_PAY": FakeChannel()})
    with pytest.raises(ChannelUnavailable):
        only_wechat.channel_for("ALIPAY")
