import pytest

from vramc.units import GiB, MiB, SizeError, fmt_size, parse_fraction, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("24GiB", 24 * GiB),
        ("24 GiB", 24 * GiB),
        ("24576", 24576 * MiB),
        (24576, 24576 * MiB),
        ("1024MiB", GiB),
        ("512M", 512 * MiB),
        ("24 GB", 24 * 10**9),
        ("1.5GiB", 3 * GiB // 2),
        ("100B", 100),
        ("2TiB", 2048 * GiB),
        (0.5, MiB // 2),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["24GiBs", "-3GiB", "GiB", True, None, [1], "1e3"])
def test_parse_size_rejects(bad):
    with pytest.raises(SizeError):
        parse_size(bad)


def test_parse_fraction():
    assert parse_fraction("25%") == 0.25
    assert parse_fraction(0.3) == 0.3
    with pytest.raises(SizeError):
        parse_fraction("150%")


def test_fmt_size():
    assert fmt_size(512 * MiB) == "512 MiB"
    assert fmt_size(24 * GiB) == "24.00 GiB"
