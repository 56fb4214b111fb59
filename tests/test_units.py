"""Sizes read from text, as the limit_copied marker takes them."""

import re

import pytest

from cowmem.units import parse_size


@pytest.mark.parametrize("text, size", [
    ("64 KiB", 64 * 1024),
    ("1.5 MiB", 3 * 2**19),
    ("4096 B", 4096),
    ("4096b", 4096),
    ("2 gib", 2 * 2**30),
    (" 1 TiB ", 2**40),
    (".5 KiB", 512),
    ("0 B", 0),
    # A fraction of a larger unit, rounded down to whole bytes:
    # 1.1 MiB is 1,153,433.6 bytes.
    ("1.1 MiB", 1_153_433),
    (4096, 4096),
    (0, 0),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, message", [
    ("64 KB", "'64 KB' is ambiguous (tools differ on whether KB counts in powers of 1,000 or 1,024): "
              "write '64 KiB' for 65,536 bytes"),
    ("1.5mb", "'1.5mb' is ambiguous (tools differ on whether MB counts in powers of 1,000 or 1,024): "
              "write '1.5 MiB' for 1,572,864 bytes"),
    ("64", "cannot read '64' as a size: write a number and a unit, e.g. '64 KiB', '1.5 MiB' or '4096 B'"),
    ("KiB", "cannot read 'KiB' as a size*"),
    ("-1 KiB", "cannot read '-1 KiB' as a size*"),
    ("3 xb", "unknown unit 'xb' in '3 xb': use B, KiB, MiB, GiB or TiB"),
    ("1.5 B", "'1.5 B' is not a whole number of bytes"),
    (-1, "a size cannot be negative: -1"),
])
def test_bad_sizes_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert re.fullmatch(re.escape(message).replace(r"\*", ".*"), str(info.value)), str(info.value)


@pytest.mark.parametrize("value", [1.5, True, None, b"64 KiB"])
def test_a_size_is_an_int_or_a_str(value):
    with pytest.raises(TypeError, match=f"a size is an int .bytes. or a text like '64 KiB', not {type(value).__name__}"):
        parse_size(value)
