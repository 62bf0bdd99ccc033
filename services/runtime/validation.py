"""Request validation helpers: collect every field violation, then fail once with all of them."""

from __future__ import annotations

import re
from datetime import date

from google.protobuf.message import Message

from services.runtime.clock import FIRST_BUSINESS_DATE, LAST_BUSINESS_DATE
from services.runtime.errors import FieldViolation, InvalidArgument

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# date.fromisoformat also reads 20261125 and 2026-W48-3; the contracts say YYYY-MM-DD.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


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
        """A business day (Asia/Shanghai) as YYYY-MM-DD, within the days the platform serves."""
        try:
            day = date.fromisoformat(value) if _ISO_DATE.fullmatch(value) else None
        except ValueError:
            day = None
        if day is None:
            self.add(field, "required: a date as YYYY-MM-DD")
        elif not FIRST_BUSINESS_DATE <= day <= LAST_BUSINESS_DATE:
            self.add(field, f"must be between {FIRST_BUSINESS_DATE} and {LAST_BUSINESS_DATE}")
            day = None
        return day

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


def require_business_date(value: str, field: str = "business_date") -> date:
    """The business day of a request that has no other field to check; InvalidArgument if not one."""
    found = Violations()
    day = found.business_date(value, field)
    found.raise_if_any()
    assert day is not None
    return day


def nul_character_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field holding a NUL character, which no database of ours
    can store (PostgreSQL refuses it), or None. Walks only the fields that are set."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        values = list(value) if field.is_repeated else [value]
        for index, item in enumerate(values):
            item_path = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                return item_path
            if isinstance(item, Message):
                found = nul_character_field(item, f"{item_path}.")
                if found:
                    return found
    return None


def reject_nul_characters(message: Message) -> None:
    field = nul_character_field(message)
    if field is not None:
        raise InvalidArgument.field(field, "must not contain NUL characters")
