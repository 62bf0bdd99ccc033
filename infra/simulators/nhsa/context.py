"""What a transaction handler is given (`Call`) and what it gives back (`Answer`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.simulators.nhsa.store import InsurerBooks
from infra.simulators.nhsa.wire import JsonObject, Refusal, data_node, now_in_shanghai


@dataclass(frozen=True, slots=True)
class Call:
    envelope: JsonObject
    books: InsurerBooks
    now: datetime  # UTC
    admdvs: str
    hospital_level: int
    sign_in_ttl_s: int

    @property
    def infno(self) -> str:
        return str(self.envelope["infno"])

    @property
    def msgid(self) -> str:
        return str(self.envelope["msgid"])

    @property
    def fixmedins_code(self) -> str:
        return str(self.envelope["fixmedins_code"])

    def data(self, name: str = "data") -> JsonObject:
        return data_node(self.envelope, name)

    def input_node(self, name: str) -> Any:
        node = self.envelope.get("input")
        if not isinstance(node, dict) or name not in node:
            raise Refusal(f"缺少输入节点 {name}")
        return node[name]

    async def new_id(self, counter: str, marker: str) -> str:
        """A platform id: region(6) + Beijing date(8) + marker(1) + sequence(9), e.g. mdtrt_id, setl_id."""
        sequence = await self.books.next_value(counter)
        return f"{self.admdvs}{now_in_shanghai(self.now):%Y%m%d}{marker}{sequence:09d}"


@dataclass(frozen=True, slots=True)
class Answer:
    output: JsonObject
    effect: str = ""  # what a mutating message created, for replay and 2601 reversal
    warn_msg: str | None = None


Handler = Callable[[Call], Awaitable[Answer]]
