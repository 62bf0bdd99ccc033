"""The channel keys name their order, so a notification needs no lookup to find it."""

from __future__ import annotations

import pytest

from services.payment_core.domain import keys

ORDER = "ord_0123456789abcdef01234567"


@pytest.mark.parametrize(
    "key", [keys.out_trade_no(ORDER, 1), keys.out_trade_no(ORDER, 99), keys.out_refund_no(ORDER, 3)]
)
def test_our_keys_name_their_order(key: str) -> None:
    assert keys.order_of(key) == ORDER


@pytest.mark.parametrize(
    "key",
    ["HIS-KIOSK-0001", f"{ORDER}_1", f"{ORDER}_R", f"{ORDER}_01x", f"x{ORDER}_01", "ord_0123_01", f"{ORDER}"],
)
def test_a_key_of_another_shape_names_no_order(key: str) -> None:
    assert keys.order_of(key) is None
