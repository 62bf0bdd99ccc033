from medpay.payment.v1 import payment_pb2

from services.payment_core.domain.model import OrderStatus
from services.payment_core.entrypoints.mapping import order_status


def test_every_order_status_has_its_own_contract_value() -> None:
    """An order whose pre-settlement is under way once surfaced as UNSPECIFIED."""
    mapped = {status: order_status(status) for status in OrderStatus}
    assert payment_pb2.ORDER_STATUS_UNSPECIFIED not in mapped.values()
    assert len(set(mapped.values())) == len(mapped)
    assert mapped[OrderStatus.PRESETTLING] == payment_pb2.ORDER_STATUS_PRESETTLING
