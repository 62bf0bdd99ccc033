import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# The exact patterns scrub() implements, written the plain way (slow: a lookbehind at every
# position); scrub must mask exactly what they mask.
_REFERENCE_ID = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
_REFERENCE_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def _reference_scrub(text: str) -> str:
    text = _REFERENCE_ID.sub(lambda m: m.group(1)[:4] + "**********" + m.group(2), text)
    return _REFERENCE_PHONE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


@pytest.mark.parametrize(
    "text",
    [
        f"{ID_NUMBER}",
        "35010219900101123X and 35010219900101123x",
        "35010219900101123X7",  # a digit after the X: not an ID number
        f"{ID_NUMBER}X",  # 18 digits, then an X that is not part of it
        f"9{ID_NUMBER}",  # inside a longer run
        "13812345678X 12812345678 138123456789 phone:15900001111,",
        '{"msgid":"H35010200901202612042126469891","certno":"350102199001011234"}',
        "１３８１２３４５６７８ and ٣٥٠١٠٢١٩٩٠٠١٠١١٢٣٤",  # other decimal digits count as digits
        "",
    ],
)
def test_scrub_masks_what_the_plain_patterns_mask(text: str) -> None:
    assert scrub(text) == _reference_scrub(text)


_DIGIT_RUNS = st.text(alphabet=st.sampled_from("0123456789"), min_size=9, max_size=20)
_BETWEEN = st.sampled_from(["", "X", "x", " ", ",", '"', "٣", "１", "a"])
_TEXTS = st.lists(st.one_of(_DIGIT_RUNS, _BETWEEN), max_size=8).map("".join)


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_scrub_agrees_with_the_plain_patterns_on_any_text(text: str) -> None:
    assert scrub(text) == _reference_scrub(text)
