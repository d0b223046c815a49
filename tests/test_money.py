# Runs on CPython (pytest): strict yuan parsing and fen formatting.
import pytest
from hypothesis import given, strategies as st

from host.errors import InputError
from host.money import format_fen, parse_yuan


@pytest.mark.parametrize("text,fen", [
    ("12.50", 1250), ("12.5", 1250), ("0", 0), ("0.01", 1), ("3", 300), ("100.00", 10000),
    ("999999999999.99", 99_999_999_999_999),
])
def test_parse_accepts(text, fen):
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", [
    "", " ", "12.505", "-1", "+1", "1e3", "nan", "NaN", "inf", "12.", ".5", "012", "1,000",
    " 12.50", "12.50 ", "１２", "12.5a", "0x10", "1_000", "1000000000000", "--1", "12..5",
])
def test_parse_rejects(text):
    with pytest.raises(InputError) as e:
        parse_yuan(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [12.5, 1250, None, b"12"])
def test_parse_rejects_non_strings(value):
    with pytest.raises(InputError):
        parse_yuan(value)


@pytest.mark.parametrize("fen,text", [(0, "0.00"), (1, "0.01"), (1250, "12.50"), (-5, "-0.05"),
                                      (-12345, "-123.45"), (100, "1.00")])
def test_format(fen, text):
    assert format_fen(fen) == text


def test_format_rejects_float_and_bool():
    with pytest.raises(TypeError):
        format_fen(12.5)
    with pytest.raises(TypeError):
        format_fen(True)


@given(st.integers(min_value=0, max_value=99_999_999_999_999))
def test_round_trip(fen):
    assert parse_yuan(format_fen(fen)) == fen
