"""The NHSA wire as the insurer sees it: JSON with exact decimals, yuan amounts, node helpers.

Amounts leave as JSON numbers with exactly two decimals (`12.30`), the way the platform's own
responses look; requests are parsed with `parse_float=Decimal` and may carry amounts as numbers or
strings. Nothing here ever touches a float.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from services.runtime.money import Money

# China has had no daylight saving since 1991: a fixed offset is exact and needs no tzdata.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
JsonObject = dict[str, Any]


class Refusal(Exception):
    """A business refusal: the transaction answers infcode -1 with this err_msg."""

    def __init__(self, err_msg: str) -> None:
        super().__init__(err_msg)
        self.err_msg = err_msg


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    """JSON text in which Decimals are written as numbers, digit for digit."""
    text = json.dumps(_encodable(value), ensure_ascii=False, separators=(",", ":"))
    return _DECIMAL_MARK.sub(lambda match: match.group(1), text)


# json.dumps has no hook for raw number text, so a Decimal travels as a string wrapped in NUL
# marks whose quotes are removed afterwards. Text holding a NUL is refused, so no real string can
# look like a mark.
_DECIMAL_MARK = re.compile(r'"\\u0000dec:([-+0-9.E]+)\\u0000"')


def _encodable(value: Any) -> Any:
    # Exact types first: every reply is walked node by node, and an isinstance against the
    # Mapping ABC costs several times a type comparison. Anything else takes the general path.
    kind = type(value)
    if kind is str:
        if "\u0000" in value:
            raise ValueError("NUL characters never go on the NHSA wire")
        return value
    if kind is dict:
        return {key: _encodable(item) for key, item in value.items()}
    if value is None or kind is int or kind is bool:
        return value
    if kind is list or kind is tuple:
        return [_encodable(item) for item in value]
    return _encodable_other(value)


def _encodable_other(value: Any) -> Any:
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


def yuan(amount: Money) -> Decimal:
    """Fen to the wire's yuan with exactly two decimals."""
    return Decimal(amount.to_yuan_str())


def money(value: Any, field: str) -> Money:
    """A yuan amount from the wire (number or string, at most two decimals) as Money."""
    if isinstance(value, (float, bool)) or value is None:
        raise Refusal(f"{field} 金额格式错误")
    try:
        return Money.from_yuan_str(str(value))
    except ValueError as exc:
        raise Refusal(f"{field} 金额格式错误") from exc


def decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, (float, bool)) or value is None:
        raise Refusal(f"{field} 数值格式错误")
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise Refusal(f"{field} 数值格式错误") from exc
    if not result.is_finite():
        raise Refusal(f"{field} 数值格式错误")
    return result


def as_list(node: Any) -> list[JsonObject]:
    """A list node that a sender may also have sent as one object."""
    if node is None:
        return []
    if isinstance(node, Mapping):
        return [dict(node)]
    if isinstance(node, list) and all(isinstance(item, Mapping) for item in node):
        return [dict(item) for item in node]
    raise Refusal("输入节点格式错误")


def data_node(envelope: Mapping[str, Any], name: str = "data") -> JsonObject:
    node = (envelope.get("input") or {}).get(name) if isinstance(envelope.get("input"), Mapping) else None
    if not isinstance(node, Mapping):
        raise Refusal(f"缺少输入节点 {name}")
    return dict(node)


def required(node: Mapping[str, Any], field: str) -> str:
    value = node.get(field)
    if value is None or str(value).strip() == "":
        raise Refusal(f"{field} 不能为空")
    return str(value).strip()


def optional(node: Mapping[str, Any], field: str) -> str:
    value = node.get(field)
    return "" if value is None else str(value).strip()


def now_in_shanghai(clock_utc: datetime) -> datetime:
    return clock_utc.astimezone(SHANGHAI)


def wire_time(moment: datetime) -> str:
    """yyyy-MM-dd HH:mm:ss in Beijing time (日期时间型)."""
    return now_in_shanghai(moment).strftime("%Y-%m-%d %H:%M:%S")


def stamp_17(moment: datetime) -> str:
    """yyyyMMddHHmmssSSS in Beijing time (refmsg_time, respond_time)."""
    local = now_in_shanghai(moment)
    return local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}"


def utc_now() -> datetime:
    return datetime.now(UTC)
