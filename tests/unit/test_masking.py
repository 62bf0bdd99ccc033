import json
import logging

from services.runtime.logging import JsonFormatter
from services.runtime.masking import (
    PatientIdentifier,
    mask_certificate,
    mask_name,
    mask_payment_code,
    mask_phone,
    scrub,
)

ID_NUMBER = "350102199001011234"


def test_identifiers_keep_only_what_staff_need_to_recognise() -> None:
    assert mask_certificate(ID_NUMBER) == "3501**********1234"
    assert mask_name("张三丰") == "张**"
    assert mask_phone("13812345678") == "138****5678"


def test_patient_identifier_never_prints_in_clear() -> None:
    who = PatientIdentifier(ID_NUMBER)
    assert ID_NUMBER not in repr(who)
    assert ID_NUMBER not in str(who)
    assert ID_NUMBER not in f"{who} {[who]}"
    assert who.reveal() == ID_NUMBER


def test_scrub_masks_id_numbers_and_phones_in_free_text() -> None:
    text = scrub(f"patient {ID_NUMBER} phone 13812345678 paid 12.30")
    assert ID_NUMBER not in text and "13812345678" not in text
    assert "12.30" in text


def test_json_logs_scrub_messages_and_fields() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "lookup %s", (ID_NUMBER,), None)
    record.fields = {"certno": ID_NUMBER}
    line = JsonFormatter("payment-core").format(record)
    assert ID_NUMBER not in line
    assert json.loads(line)["service"] == "payment-core"


def test_a_payment_code_keeps_only_its_channel_prefix_and_last_four_digits() -> None:
    code = PatientIdentifier("134567890123456789", kind="payment_code")
    assert str(code) == repr(code).split("'")[1] == "13************6789"
    assert "4567890123" not in f"{code!r} {code}" and code.reveal() == "134567890123456789"
    assert mask_payment_code("1234") == "****"
