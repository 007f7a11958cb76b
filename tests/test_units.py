"""Operator values: what is accepted, and that every refusal names the accepted forms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migtui.model.units import (
    InputError,
    format_bytes,
    format_duration,
    parse_count,
    parse_rate,
    parse_size,
    parse_time_ms,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("4096", 4096),
        ("512K", 512 * 2**10),
        ("100M", 100 * 2**20),
        ("100MB", 100 * 2**20),
        ("100MiB", 100 * 2**20),
        ("1.5G", 3 * 2**29),
        ("2t", 2 * 2**40),
        (" 64 M ", 64 * 2**20),
    ],
)
def test_sizes_are_binary(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [("100M/s", 100 * 2**20), ("1G", 2**30), ("125MiB/s", 125 * 2**20)])
def test_rates(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5M", "negative"),
        ("abc", "not understood"),
        ("10X", "not understood"),
        ("1.5", "whole number"),
        ("9999999T", "too large"),
        ("1e400", "not understood"),
        ("100M/s", "not understood"),  # a rate where a size is asked for
    ],
)
def test_bad_sizes_name_the_accepted_forms(text, fragment):
    with pytest.raises(InputError) as err:
        parse_size(text, "--xbzrle-cache")
    message = str(err.value)
    assert fragment in message
    assert "--xbzrle-cache" in message and "100M" in message
    assert "\n" not in message


def test_zero_bandwidth_is_refused():
    with pytest.raises(InputError, match="would stop the migration"):
        parse_rate("0")


@pytest.mark.parametrize("text, ms", [("300ms", 300), ("0.3s", 300), ("2s", 2000), ("2 S", 2000), ("1.5ms", 2)])
def test_times(text, ms):
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(
    "text, fragment",
    [("300", "no unit"), ("", "empty"), ("-1s", "negative"), ("5min", "not understood"), ("3000s", "2000s"), ("0.1ms", "under 1ms")],
)
def test_bad_times(text, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        parse_time_ms(text)
    assert "300ms" in str(err.value)


def test_counts():
    assert parse_count("4", "--multifd", 1, 255) == 4
    for bad in ("0", "256", "x", "-1", "2.5"):
        with pytest.raises(InputError, match="1 to 255"):
            parse_count(bad, "--multifd", 1, 255)


def test_formatting():
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(300 * 2**20) == "300 MiB"
    assert format_duration(0.022) == "22ms"
    assert format_duration(3.25) == "3.2s"
    assert format_duration(83) == "1m23s"
    assert format_duration(7322) == "2h02m"
    assert format_duration(None) == "-"


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_cleanly(text):
    for parse in (parse_size, parse_rate, parse_time_ms):
        try:
            value = parse(text)
        except InputError as err:
            assert "\n" not in str(err)
        else:
            assert value >= 0


@given(st.integers(min_value=0, max_value=2**50))
def test_size_round_trip(n):
    assert parse_size(str(n)) == n
