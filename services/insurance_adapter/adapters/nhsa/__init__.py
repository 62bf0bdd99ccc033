"""The NHSA (国家医保信息平台) adapter: the insurer's HTTP/JSON interface behind NhsaClient."""

from services.insurance_adapter.adapters.nhsa.client import NhsaClient
from services.insurance_adapter.adapters.nhsa.config import NhsaClientConfig
from services.insurance_adapter.adapters.nhsa.errors import (
    InsurerOutcomeUnknown,
    InsurerRejected,
    InsurerUnavailable,
    NhsaError,
)
from services.insurance_adapter.adapters.nhsa.transport import ExchangeOutcome, ExchangeRecorder

__all__ = [
    "ExchangeOutcome",
    "ExchangeRecorder",
    "InsurerOutcomeUnknown",
    "InsurerRejected",
    "InsurerUnavailable",
    "NhsaClient",
    "NhsaClientConfig",
    "NhsaError",
]
