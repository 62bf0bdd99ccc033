"""JSON for the NHSA wire without floats: Decimals in, Decimals out, written digit for digit."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# json.dumps has no hook for raw number text, so a Decimal travels as a string wrapped in NUL
# marks whose quotes are removed afterwards. Text holding a NUL is refused, so no real string can
# look like a mark.
_DECIMAL_MARK = re.compile(r'"\\u0000dec:([-+0-9.E]+)\\u0000"')


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    text = json.dumps(_encodable(value), ensure_ascii=False, separators=(",", ":"))
    return _DECIMAL_MARK.sub(lambda match: match.group(1), text)


def _encodable(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("only finite numbers go on the NHSA wire")
        return f"\u0000dec:{value}\u0000"
    if isinstance(value, str) and "\u0000" in value:
        raise ValueError("NUL characters never go on the NHSA wire")
    if isinstance(value, Mapping):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(item) for item in value]
    if isinstance(value, float):
        raise TypeError("floats never go on the NHSA wire")
    return value
