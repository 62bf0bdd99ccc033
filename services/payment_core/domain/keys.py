"""Business-derived keys for every outbound call and ledger transfer.

Each key is a pure function of the order and the step, so a retry (after a crash, a timeout or a
replayed request) sends the same key again and the partner treats it as the same operation.
Order ids are 28 characters ("ord_" + 24 hex), which keeps these keys within WeChat's 32-character
out_trade_no / out_refund_no and the 64-character request_id of the mesh.
"""

from __future__ import annotations

import re

MAX_ATTEMPTS = 99
_ORDER_OF_KEY = re.compile(r"(ord_[0-9a-f]{24})_(?:\d{2}|R\d{1,2})")


def out_trade_no(order_id: str, attempt_no: int) -> str:
    """The merchant order number of payment attempt `attempt_no` (1-based) of an order."""
    if not 1 <= attempt_no <= MAX_ATTEMPTS:
        raise ValueError(f"attempt number out of range: {attempt_no}")
    return f"{order_id}_{attempt_no:02d}"


def out_refund_no(order_id: str, refund_no: int) -> str:
    """The merchant refund number of refund `refund_no` (1-based) of an order."""
    if not 1 <= refund_no <= MAX_ATTEMPTS:
        raise ValueError(f"refund number out of range: {refund_no}")
    return f"{order_id}_R{refund_no}"


def order_of(channel_key: str) -> str | None:
    """The order an out_trade_no or out_refund_no of ours names (None for a key of another shape:
    another system on the same merchant account). Whether that order has such a payment or refund
    is for the order to say."""
    matched = _ORDER_OF_KEY.fullmatch(channel_key)
    return matched.group(1) if matched else None


def insurer_request_id(order_id: str, step: str) -> str:
    """The request_id payment-core sends to insurance-adapter for one step of one order
    ("presettle", "settle", "cancel", "revoke"): the adapter replays instead of repeating."""
    return f"{order_id}-{step}"


def transfer_key(order_id: str, step: str) -> str:
    """The ledger transfer key of one money movement of an order ("settle", "refund-R1")."""
    return f"{order_id}:{step}"
