"""Money as an integer count of fen (分). The only conversions live at the edges, here by name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_FEN_PER_YUAN = 100
_TWO_PLACES = Decimal("0.01")
# A charge line's quantity counts ten-thousandths of a unit (NHSA cnt is 16,4): 1 unit = 10000.
QUANTITY_SCALE = 10_000


@dataclass(frozen=True, order=True, slots=True)
class Money:
    """An amount of CNY in fen. Never built from a float; arithmetic stays in integers."""

    fen: int

    def __post_init__(self) -> None:
        if isinstance(self.fen, bool) or not isinstance(self.fen, int):
            raise TypeError(f"Money needs an int count of fen, got {type(self.fen).__name__}")

    @classmethod
    def zero(cls) -> Money:
        return cls(0)

    @classmethod
    def from_yuan_str(cls, text: str) -> Money:
        """Parse a yuan string with at most two decimals ("12.30", "-0.05"); anything finer is refused."""
        try:
            value = Decimal(str(text).strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a yuan amount: {text!r}") from exc
        if not value.is_finite() or value != value.quantize(_TWO_PLACES):
            raise ValueError(f"yuan amount must have at most two decimals: {text!r}")
        return cls(int(value * _FEN_PER_YUAN))

    def to_yuan_str(self) -> str:
        """Exactly two decimals, as the insurer and the bills expect ("12.30")."""
        return str((Decimal(self.fen) / _FEN_PER_YUAN).quantize(_TWO_PLACES))

    def __add__(self, other: Money) -> Money:
        return Money(self.fen + other.fen)

    def __sub__(self, other: Money) -> Money:
        return Money(self.fen - other.fen)

    def __neg__(self) -> Money:
        return Money(-self.fen)

    def is_negative(self) -> bool:
        return self.fen < 0

    def times_ratio(self, ratio: Decimal) -> Money:
        """Apply a policy ratio (e.g. 0.78) and round half-up to the fen, the insurer's rounding."""
        return Money(int((Decimal(self.fen) * ratio).quantize(Decimal(1), rounding=ROUND_HALF_UP)))

    def __str__(self) -> str:
        return f"¥{self.to_yuan_str()}"


def total(amounts: Iterable[Money]) -> Money:
    """Sum of amounts; the empty sum is zero fen."""
    result = 0
    for amount in amounts:
        result += amount.fen
    return Money(result)


def line_total(quantity: int, unit_price: Money) -> Money:
    """What a charge line bills: quantity (ten-thousandths of a unit, > 0) × unit price (>= 0),
    rounded half-up to the fen as det_item_fee_sumamt (16,2) is, in integers. The one rule for
    every order: payment-core checks it on self-pay and insured bills, insurance-adapter on 2204."""
    return Money((quantity * unit_price.fen + QUANTITY_SCALE // 2) // QUANTITY_SCALE)
