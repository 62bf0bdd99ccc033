"""What can go wrong talking to the insurer, in the three kinds a caller must tell apart."""

from __future__ import annotations


class NhsaError(Exception):
    def __init__(self, infno: str, msgid: str, detail: str) -> None:
        super().__init__(f"NHSA {infno} (msgid {msgid}): {detail}")
        self.infno = infno
        self.msgid = msgid
        self.detail = detail


class InsurerRejected(NhsaError):
    """infcode -1: the insurer refused the message; nothing happened. `err_msg` is its reason
    (free text that may quote identifiers: scrub before logging)."""

    def __init__(self, infno: str, err_msg: str, msgid: str = "") -> None:
        super().__init__(infno, msgid, err_msg)
        self.err_msg = err_msg


class InsurerUnavailable(NhsaError):
    """The message never reached the insurer's business logic (connection refused, gateway 4xx,
    502/503): nothing happened; retrying later is safe."""


class InsurerOutcomeUnknown(NhsaError):
    """The message was sent but no usable answer came back (timeout, broken connection, 500/504,
    unreadable reply): it may or may not have taken effect. Resend with the same msgid, query
    (5203), or reverse (2601); never guess."""
