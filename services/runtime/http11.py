"""Our own HTTP/1.1 client for our own small POSTs: to one origin over kept-alive connections.

Used where we are free to choose the client: the NHSA transport, and the channel simulators'
notifications (the channel adapters speak through the channels' maintained SDKs instead).

Why not httpx: a 2-core box spent ~1.3 ms of the adapter's CPU per NHSA message in httpx,
httpcore, h11 and anyio, and two socket writes (head, then body) where one does. A caller needs
one thing only, a POST of a small body with a deadline, and how far it got when it failed, since
that decides whether the other side may have acted on it:

- `NotConnected`: no connection could be had; nothing was sent;
- `NotSentCompletely`: the request could not be written whole; the other side cannot have read it;
- `NoAnswer`: it was sent, and no complete answer came (deadline, reset, end of stream, or an
  answer that is not HTTP): the other side may have acted on it.

A kept-alive connection that the server has closed meanwhile is dropped before it is reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_IDLE = 20
_HEAD_END = b"\r\n\r\n"
# An answer cut short, too long a head, or one that is not HTTP.
_BROKEN_ANSWER = (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class SendFailed(Exception):
    """The exchange did not end with an answer; the subclass says how far it got."""


class NotConnected(SendFailed):
    pass


class NotSentCompletely(SendFailed):
    pass


class NoAnswer(SendFailed):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def reusable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Http11Origin:
    """POSTs to `base_url`'s scheme://host:port; safe to share between concurrent callers (each
    exchange has a connection of its own). `on_request(host:port)` is told of every request made
    (a service counts them in its metrics; this module imports nothing but the standard library,
    so a simulator can use it without loading a service's runtime)."""

    def __init__(self, base_url: str, on_request: Callable[[str], None] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._netloc = f"{self._host}:{self._port}"
        self._idle: list[_Connection] = []
        self._on_request = on_request

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float, connect_timeout_s: float
    ) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = await self._connection(min(deadline, loop.time() + connect_timeout_s))
        if self._on_request is not None:
            self._on_request(self._netloc)
        try:
            request = self._request(path, body, headers)
            answer, keep_alive = await self._exchange(connection, request, deadline)
        except BaseException:
            connection.close()
            raise
        if keep_alive and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connection(self, deadline: float) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        except (OSError, TimeoutError) as exc:
            raise NotConnected(type(exc).__name__) from exc
        return _Connection(reader, writer)

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"host: {self._netloc}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _exchange(
        self, connection: _Connection, request: bytes, deadline: float
    ) -> tuple[Answer, bool]:
        """Send the request in one write and read the answer, all within the deadline."""
        sent = False
        try:
            async with asyncio.timeout_at(deadline):
                connection.writer.write(request)
                await connection.writer.drain()
                sent = True
                return await _read_answer(connection.reader)
        except (OSError, TimeoutError, *_BROKEN_ANSWER) as exc:
            if not sent:
                raise NotSentCompletely(type(exc).__name__) from exc
            raise NoAnswer(type(exc).__name__) from exc


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """An HTTP/1.1 answer (Content-Length, chunked, or until the end of the stream), and whether
    its connection may be used again. A malformed answer raises ValueError."""
    head = (await reader.readuntil(_HEAD_END)).decode("latin-1").split("\r\n")
    version, _, rest = head[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x answer")
    status = int(rest[:3])
    fields: dict[str, str] = {}
    for line in head[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    keep_alive = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
    if status < 200 or status in (204, 304):
        return Answer(status, b""), keep_alive
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return Answer(status, await _chunked(reader)), keep_alive
    if "content-length" in fields:
        return Answer(status, await reader.readexactly(int(fields["content-length"]))), keep_alive
    return Answer(status, await reader.read()), False


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
