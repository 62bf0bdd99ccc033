"""Our HTTP/1.1 client (the NHSA transport's, the simulators' notifications) against small loopback
servers: one write per request, kept-alive connections reused (and dropped once the server closed
them), chunked answers, and how far an exchange got when it failed (not connected / not sent
completely / no answer)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from services.runtime.http11 import Http11Origin, NoAnswer, NotConnected

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{"infcode":0}'


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on an ephemeral port; yields its base URL and the connections it accepted."""
    accepted: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", accepted


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def answer_ok_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while not reader.at_eof():
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(OK)
        await writer.drain()


async def test_a_post_is_answered_and_its_connection_is_kept_for_the_next() -> None:
    async with serving(answer_ok_forever) as (url, accepted):
        origin = Http11Origin(url)
        for _ in range(3):
            answer = await origin.post("/call", b'{"infno":"9001"}', {"x-tif-paasid": "p"}, 2.0, 1.0)
            assert (answer.status, answer.text) == (200, '{"infcode":0}')
        await origin.aclose()
    assert len(accepted) == 1


async def test_the_request_leaves_whole_with_its_headers_and_body() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    async with serving(record) as (url, _):
        await Http11Origin(url + "/fsi").post("/fsi/call", b"{}", {"x-tif-nonce": "n1"}, 2.0, 1.0)
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /fsi/call HTTP/1.1"
    assert b"x-tif-nonce: n1" in head and b"content-length: 2" in head
    assert body == b"{}"


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    async with serving(answer_once_then_close) as (url, accepted):
        origin = Http11Origin(url)
        await origin.post("/call", b"{}", {}, 2.0, 1.0)
        await asyncio.sleep(0.05)  # the server's FIN arrives
        answer = await origin.post("/call", b"{}", {}, 2.0, 1.0)
    assert answer.status == 200
    assert len(accepted) == 2


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b'5\r\n{"inf\r\n8;ext=1\r\ncode":0}\r\n0\r\n\r\n')
        await writer.drain()

    async with serving(chunked) as (url, _):
        answer = await Http11Origin(url).post("/call", b"{}", {}, 2.0, 1.0)
    assert answer.text == '{"infcode":0}'


async def test_nobody_listening_is_not_connected() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NotConnected):
        await Http11Origin(f"http://127.0.0.1:{port}").post("/call", b"{}", {}, 1.0, 0.5)


@pytest.mark.parametrize(
    "behaviour",
    ["never answers", "closes without answering", "answers something that is not HTTP", "answers half"],
)
async def test_a_request_sent_without_a_complete_answer_is_no_answer(behaviour: str) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if behaviour == "never answers":
            await asyncio.sleep(5)
        elif behaviour == "answers something that is not HTTP":
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        elif behaviour == "answers half":
            writer.write(OK[:-5])
        await writer.drain()

    async with serving(misbehave) as (url, _):
        with pytest.raises(NoAnswer):
            await Http11Origin(url).post("/call", b"{}", {}, 0.3, 0.3)


def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError):
        Http11Origin("ftp://insurer.example/")
