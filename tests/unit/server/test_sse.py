"""Last-Event-ID parsing: any header a client sends gives a number to replay from, never a 500."""

import pytest

from tinyimg.api.sse import parse_last_event_id


@pytest.mark.parametrize(("header", "expected"), [
    (None, 0), ("", 0), ("7", 7), ("000012", 12), ("9" * 18, int("9" * 18)),
    ("9" * 5000, 0),  # int() refuses over 4,300 digits: was a 500
    ("\u00b2", 0),  # the byte 0xB2 read as latin-1: str.isdigit() says yes, int() says no: was a 500
    ("-1", 0), (" 3", 0), ("3.0", 0), ("\u0663", 0),  # Arabic-Indic three: a digit to Python, not to us
], ids=["absent", "empty", "plain", "leading-zeros", "18-digits", "5000-digits", "superscript-two",
        "negative", "space", "decimal", "arabic-indic-digit"])
def test_parse_last_event_id(header, expected):
    assert parse_last_event_id(header) == expected
