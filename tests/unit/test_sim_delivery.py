"""How the channel simulators POST their notifications in a served process (our HTTP/1.1 client),
against small loopback merchants: the notify URL's path and query are what is requested, any
status is an answer, a kept-alive connection the merchant closed is retried once on a fresh one,
and a merchant that is slow or not there is a failed attempt with its reason, never retried here
(the channel's resend schedule does that)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from infra.simulators.delivery import DeliveryFailed, LeanPost
from tests.unit.test_http11 import read_request, serving

ACK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
REFUSED = b'HTTP/1.1 500 Internal Server Error\r\ncontent-length: 15\r\n\r\n{"code":"FAIL"}'


async def test_the_notify_url_path_and_query_are_requested_and_any_status_is_an_answer() -> None:
    seen: list[bytes] = []

    async def merchant(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in (ACK, REFUSED):
            seen.append(await read_request(reader))
            writer.write(answer)
            await writer.drain()

    async with serving(merchant) as (url, accepted):
        post = LeanPost()
        first = await post.post(f"{url}/notify/wechatpay?hospital=h1", b"{}", {"Wechatpay-Serial": "S1"})
        second = await post.post(f"{url}/notify/wechatpay", b"{}", {})
        await post.aclose()

    assert (first.status, first.text, second.status) == (200, "ok", 500)
    assert seen[0].startswith(b"POST /notify/wechatpay?hospital=h1 HTTP/1.1\r\n")
    assert b"\r\nWechatpay-Serial: S1\r\n" in seen[0]
    assert accepted == [0]  # both over one kept-alive connection


async def test_a_kept_alive_connection_the_merchant_dropped_is_retried_once_on_a_fresh_one() -> None:
    requests: list[int] = []

    async def merchant(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            requests.append(len(requests))
            if len(requests) == 2:  # the second request, on the kept-alive connection: dropped unanswered
                return
            writer.write(ACK)
            await writer.drain()

    async with serving(merchant) as (url, accepted):
        post = LeanPost()
        await post.post(f"{url}/n", b"{}", {})
        answered = await post.post(f"{url}/n", b"{}", {})
        await post.aclose()

    assert answered.status == 200
    assert (len(requests), accepted) == (3, [0, 1])


async def test_a_slow_merchant_is_a_failed_attempt_and_is_not_asked_again_here() -> None:
    requests: list[bytes] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        await asyncio.sleep(2)

    async with serving(slow) as (url, _):
        with pytest.raises(DeliveryFailed, match="ReadTimeout"):
            await LeanPost(timeout_s=0.3).post(f"{url}/n", b"{}", {})

    assert len(requests) == 1


async def test_no_merchant_listening_is_a_failed_attempt() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryFailed, match="ConnectError"):
        await LeanPost(timeout_s=0.5).post(f"http://127.0.0.1:{port}/n", b"{}", {})


async def test_a_notify_url_that_is_not_http_is_a_failed_attempt() -> None:
    with pytest.raises(DeliveryFailed, match="UnsupportedProtocol"):
        await LeanPost().post("ftp://his.example/notify", b"{}", {})
