"""Channel port errors, said in the mesh's words (services.runtime.errors) for the caller."""

from __future__ import annotations

from services.payment_core.adapters.channels import ports
from services.runtime import errors


def as_runtime_error(error: ports.ChannelError) -> errors.MedPayError:
    if isinstance(error, ports.ChannelRejected):
        return errors.ChannelRejected(
            f"the channel refused: {error.code}",
            {"channel_code": error.code, "rejection": error.reason.value},
        )
    if isinstance(error, ports.ChannelUnavailable):
        return errors.ChannelUnavailable("the channel could not be reached; nothing happened there")
    return errors.OutcomeUnknown("the channel's answer was lost or unreadable; a query will decide")
