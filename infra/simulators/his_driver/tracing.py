"""The driver's tracing: its own spans file, httpx instrumented, and the gRPC client interceptors
that carry each visit's trace context into the mesh through the facade's channels."""

from __future__ import annotations

from pathlib import Path

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider

from services.runtime.telemetry import configure_tracing, instrument_httpx

SERVICE_NAME = "his-driver"


def start_tracing(trace_dir: Path) -> TracerProvider:
    """Call once per process, before any client or channel exists; flush the provider at the end."""
    provider = configure_tracing(SERVICE_NAME, trace_dir)
    instrument_httpx()
    return provider


def grpc_tracing_interceptors() -> list[grpc.aio.ClientInterceptor]:
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors
