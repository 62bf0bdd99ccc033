"""Request validation helpers: collect every field violation, then fail once with all of them."""

from __future__ import annotations

import re
from datetime import date

from services.runtime.errors import FieldViolation, InvalidArgument

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class Violations:
    """Collects field violations; `raise_if_any()` raises one InvalidArgument naming them all."""

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._found.append(FieldViolation(field, description))

    def require(self, condition: bool, field: str, description: str) -> None:
        if not condition:
            self.add(field, description)

    def require_request_id(self, value: str, field: str = "request_id") -> None:
        self.require(bool(_REQUEST_ID.match(value)), field, "required: 1-64 characters of [A-Za-z0-9_-]")

    def require_text(self, value: str, field: str, max_length: int = 64) -> None:
        self.require(0 < len(value.strip()) <= max_length, field, f"required, at most {max_length} chars")

    def business_date(self, value: str, field: str = "business_date") -> date | None:
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.add(field, "required: a date as YYYY-MM-DD")
            return None

    def page_size(self, value: int, field: str = "page_size", default: int = 50, maximum: int = 500) -> int:
        if value < 0 or value > maximum:
            self.add(field, f"must be between 0 and {maximum}")
            return default
        return value or default

    @property
    def found(self) -> list[FieldViolation]:
        return list(self._found)

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidArgument(self._found)
