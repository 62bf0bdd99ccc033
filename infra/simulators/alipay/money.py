"""Yuan on Alipay's wire <-> integer fen inside the simulator, exactly (Decimal, never float)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MIN_FEN, MAX_FEN = 1, 100_000_000 * 100  # 0.01 .. 100000000 yuan (total_amount's documented range)


def fen_of(value: object) -> int | None:
    """'125.00' or '125' or '0.5' -> fen; None when it is not an amount with at most 2 decimals.
    The SDK passes whatever the caller put in biz_content, so numbers arrive as JSON numbers too;
    a JSON float is read through its text, never as a binary float."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        return None
    return int(amount * 100)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"
