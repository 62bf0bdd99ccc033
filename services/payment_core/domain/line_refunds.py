"""Refunds by lines of a settled insured order (a drug returned, a test cancelled), pure.

A cash amount alone cannot say which lines leave the bill, and the insurer prices a bill as a whole
(deductible, caps, the personal account), so the platform never computes the new split itself: it
revokes the settlement (2208), has the insurer pre-settle and settle what remains (2204 + 2206,
2207) and refunds the difference of the cash share. This module says what remains of a bill and
checks a request's lines against it; domain.order records the stages and domain.process decides
the steps.
"""

from __future__ import annotations

from dataclasses import replace

from services.payment_core.domain.model import ChargeLine, LineRefund, LineRefundStage, RefundedLine
from services.runtime.errors import InvalidArgument
from services.runtime.money import line_total

# The stages whose lines are off the bill: done, under way, or stopped for a person (a refused
# 2208 changed nothing, so its lines are still billed).
_TAKEN_OFF = frozenset(set(LineRefundStage) - {LineRefundStage.REFUSED})


def remaining_lines(lines: tuple[ChargeLine, ...], refunds: list[LineRefund]) -> tuple[ChargeLine, ...]:
    """The bill once the lines of `refunds` (those not refused) are taken off, in its own order."""
    left = {line.line_no: line.quantity_ten_thousandths for line in lines}
    for refund in refunds:
        if refund.stage in _TAKEN_OFF:
            for taken in refund.lines:
                left[taken.line_no] -= taken.quantity_ten_thousandths or left[taken.line_no]
    return tuple(_reduced(line, left[line.line_no]) for line in lines if left[line.line_no] > 0)


def _reduced(line: ChargeLine, quantity: int) -> ChargeLine:
    if quantity == line.quantity_ten_thousandths:
        return line
    return replace(line, quantity_ten_thousandths=quantity, line_total=line_total(quantity, line.unit_price))


def checked_lines(
    requested: tuple[RefundedLine, ...], billed: tuple[ChargeLine, ...]
) -> tuple[RefundedLine, ...]:
    """The request's lines, each named once, on the bill as it stands and within what remains of
    it (quantity 0: all of it, recorded as that quantity). INVALID_ARGUMENT naming lines[i]."""
    if not requested:
        raise InvalidArgument.field("lines", "required: the lines to refund")
    remaining = {line.line_no: line.quantity_ten_thousandths for line in billed}
    seen: set[str] = set()
    checked = []
    for index, line in enumerate(requested):
        path = f"lines[{index}]"
        if line.line_no not in remaining:
            raise InvalidArgument.field(f"{path}.line_no", "not a line of the order's remaining bill")
        if line.line_no in seen:
            raise InvalidArgument.field(f"{path}.line_no", "named twice")
        seen.add(line.line_no)
        left = remaining[line.line_no]
        if not 0 <= line.quantity_ten_thousandths <= left:
            raise InvalidArgument.field(
                f"{path}.quantity_ten_thousandths", f"must be 0 (all) to {left}, what remains of the line"
            )
        checked.append(RefundedLine(line.line_no, line.quantity_ten_thousandths or left))
    return tuple(checked)
