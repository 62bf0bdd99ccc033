"""How a channel simulator POSTs its notifications to the merchant's notify_url.

Served processes use our own HTTP/1.1 client (services.runtime.http11): the notification is one
small POST, and httpx with its tracing hook cost the WeChat Pay simulator about a third of its CPU
per settlement. Tests that script the merchant's answers hand in an httpx transport instead
(`httpx.MockTransport`), and the same notifier runs over httpx.

Either way a POST ends as an answer (any status) or as `DeliveryFailed` with the reason the
simulator records for that attempt; a notification not acknowledged is resent on the channel's
schedule, so nothing here retries on its own, except once over a fresh connection when the
exchange broke without a timeout (a kept-alive connection the merchant had closed meanwhile): a
notification may always be sent again, merchants must take duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from services.runtime.http11 import Http11Origin, NotConnected, SendFailed

TIMEOUT_S = 5.0  # the channels' own: no answer within 5 s counts as not acknowledged


@dataclass(frozen=True, slots=True)
class Answered:
    status: int
    text: str


class DeliveryFailed(Exception):
    """No answer came; `str()` is the reason recorded for the attempt."""


class NotificationPost(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answered: ...

    async def aclose(self) -> None: ...


class LeanPost:
    """One kept-alive Http11Origin per scheme://host:port of the notify URLs seen."""

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self._origins: dict[str, Http11Origin] = {}
        self._timeout_s = timeout_s

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answered:
        parts = urlsplit(url)
        origin = self._origin(f"{parts.scheme}://{parts.netloc}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            return await self._post_once(origin, target, body, headers)
        except NotConnected as exc:
            raise DeliveryFailed(f"ConnectError: {exc}") from exc
        except SendFailed as exc:
            if isinstance(exc.__cause__, TimeoutError):  # the merchant is slow, not gone
                raise DeliveryFailed(f"ReadTimeout: {exc}") from exc
            await origin.aclose()  # every kept-alive connection may be stale: the retry opens one
        try:
            return await self._post_once(origin, target, body, headers)
        except SendFailed as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        origins, self._origins = list(self._origins.values()), {}
        for origin in origins:
            await origin.aclose()

    def _origin(self, base: str) -> Http11Origin:
        origin = self._origins.get(base)
        if origin is None:
            try:
                origin = self._origins[base] = Http11Origin(base)
            except ValueError as exc:
                raise DeliveryFailed(f"UnsupportedProtocol: {exc}") from exc
        return origin

    async def _post_once(
        self, origin: Http11Origin, target: str, body: bytes, headers: dict[str, str]
    ) -> Answered:
        answer = await origin.post(target, body, headers, self._timeout_s, self._timeout_s)
        return Answered(answer.status, answer.text)


class HttpxPost:
    """The same over httpx, on the transport a test gave (its scripted merchant)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT_S), transport=transport)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answered:
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        return Answered(response.status_code, response.text)

    async def aclose(self) -> None:
        await self._client.aclose()


def notification_post(transport: httpx.AsyncBaseTransport | None) -> NotificationPost:
    return LeanPost() if transport is None else HttpxPost(transport)
