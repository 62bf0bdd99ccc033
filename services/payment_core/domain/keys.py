"""Business-derived keys for every outbound call and ledger transfer.

Each key is a pure function of the order and the step, so a retry (after a crash, a timeout or a
replayed request) sends the same key again and the partner treats it as the same operation.
Order ids are 28 characters ("ord_" + 24 hex), which keeps these keys within WeChat's 32-character
out_trade_no / out_refund_no and the 64-character request_id of the mesh.
"""

from __future__ import annotations

MAX_ATTEMPTS = 99


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


def insurer_request_id(order_id: str, step: str) -> str:
    """The request_id payment-core sends to insurance-adapter for one step of one order
    ("presettle", "settle", "cancel", "revoke"): the adapter replays instead of repeating."""
    return f"{order_id}-{step}"


def transfer_key(order_id: str, step: str) -> str:
    """The ledger transfer key of one money movement of an order ("settle", "refund-R1")."""
    return f"{order_id}:{step}"
