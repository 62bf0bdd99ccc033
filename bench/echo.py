"""The floor: a bare grpc.aio unary echo between two processes on loopback, no platform code.

`python -m bench.echo serve PORT` runs the server; `measure_echo()` drives it from the caller.
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc

ECHO_METHOD = "/medpay.bench.Echo/Echo"
PAYLOAD = b"x" * 200


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("medpay.bench.Echo", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def measure_echo(address: str, calls: int, concurrency: int) -> list[float]:
    """Latencies in seconds of `calls` echo round trips with `concurrency` in flight."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        await echo(PAYLOAD, timeout=5)  # connect and warm up

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                await echo(PAYLOAD, timeout=5)
                latencies.append(time.perf_counter() - started)

        share, extra = divmod(calls, concurrency)
        await asyncio.gather(*(worker(share + (1 if i < extra else 0)) for i in range(concurrency)))
    return latencies


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        sys.exit("usage: python -m bench.echo serve PORT")
