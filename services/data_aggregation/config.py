"""data-aggregation settings: the mesh-wide ones plus how it follows the event feeds."""

from __future__ import annotations

from pydantic import Field

from services.runtime.config import MeshSettings

SERVICE_NAME = "data-aggregation"


class DataAggregationSettings(MeshSettings):
    """Read once at boot from MEDPAY_* (this service's knobs are MEDPAY_DATA_AGGREGATION_*)."""

    # How often a caught-up feed is polled, and the ceiling of the back-off for a feed that is down.
    data_aggregation_poll_interval_s: float = Field(default=0.5, gt=0)
    data_aggregation_max_backoff_s: float = Field(default=5.0, gt=0)
    # Events asked for per ListEvents page (the feed serves at most 1000).
    data_aggregation_page_size: int = Field(default=500, gt=0, le=1000)
    # How long a caught-up follower waits in the feed's ListEvents (long poll) for the next event;
    # 0 = ask every poll interval instead. The feed answers at once when its own process sequences
    # an event (another replica's events are seen when the wait ends).
    data_aggregation_feed_wait_s: float = Field(default=20.0, ge=0, le=30)
    # After taking events, wait this long before asking again, so a burst is read as one page.
    data_aggregation_feed_linger_s: float = Field(default=0.2, ge=0, le=5)

    @property
    def grpc_address(self) -> str:
        return self.address(self.data_aggregation_port)

    def feed_addresses(self) -> dict[str, str]:
        """The services whose events are ingested, by name, with their gRPC addresses."""
        return {
            "payment-core": self.address(self.payment_core_port),
            "insurance-adapter": self.address(self.insurance_adapter_port),
            "reconciliation": self.address(self.reconciliation_port),
        }
