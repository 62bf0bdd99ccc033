"""Request validation helpers: collect every field violation, then fail once with all of them."""

from __future__ import annotations

import re
from datetime import date

from google.protobuf.message import Message

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
