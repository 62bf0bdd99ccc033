"""Refunds by lines in storage: rows of `line_refunds` <-> domain.model.LineRefund."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row

from services.payment_core.domain.model import LineRefund, LineRefundStage, RefundedLine
from services.runtime.clock import as_utc, utcnow
from services.runtime.masking import scrub
from services.runtime.money import Money


def line_refund_values(refund: LineRefund) -> dict[str, Any]:
    return {
        "line_refund_id": refund.refund_id,
        "order_id": refund.order_id,
        "line_refund_no": refund.line_refund_no,
        "stage": refund.stage.value,
        "lines": json.dumps([[line.line_no, line.quantity_ten_thousandths] for line in refund.lines]),
        "revoked_settlement_id": refund.revoked_settlement_id,
        "new_settlement_id": refund.new_settlement_id,
        "expected_cash_fen": refund.expected_cash.fen,
        "cash_fen": refund.cash.fen,
        "reason": scrub(refund.reason)[:256],
        "requested_by": refund.requested_by,
        "created_at": refund.created_at,
        "updated_at": utcnow(),
    }


def line_refund_from(row: Row[Any]) -> LineRefund:
    return LineRefund(
        refund_id=row.line_refund_id,
        order_id=row.order_id,
        line_refund_no=row.line_refund_no,
        lines=tuple(RefundedLine(str(no), int(quantity)) for no, quantity in json.loads(row.lines)),
        stage=LineRefundStage(row.stage),
        revoked_settlement_id=row.revoked_settlement_id,
        reason=row.reason,
        created_at=as_utc(row.created_at),
        expected_cash=Money(row.expected_cash_fen),
        requested_by=row.requested_by,
        new_settlement_id=row.new_settlement_id,
        cash=Money(row.cash_fen),
    )
