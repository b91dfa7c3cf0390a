"""Constants, parsing and the hlen/tlen table of reference §3."""

from __future__ import annotations

import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.suites import (
    CryptoAlg,
    RecordType,
    Suite,
    gauge_name,
    header_trailer_len,
    mac_len,
    parse_auth,
    parse_cipher,
    parse_record_type,
    parse_version,
    record_type_name,
    version_name,
)


def test_freebsd_numbers() -> None:
    assert {a.name: int(a) for a in CryptoAlg} == {
        "SHA1_HMAC": 7,
        "AES_CBC": 11,
        "SHA2_256_HMAC": 18,
        "SHA2_384_HMAC": 19,
        "AES_NIST_GCM_16": 25,
        "AES_128_NIST_GMAC": 26,
        "AES_192_NIST_GMAC": 27,
        "AES_256_NIST_GMAC": 28,
        "CHACHA20_POLY1305": 41,
    }
    assert [int(t) for t in RecordType] == [20, 21, 22, 23]
    assert [parse_version(v) for v in ("1.0", "1.1", "1.2", "1.3")] == [1, 2, 3, 4]
    assert [version_name(m) for m in (1, 2, 3, 4, 9)] == ["1.0", "1.1", "1.2", "1.3", "3.9"]
    assert (mac_len(7), mac_len(18), mac_len(19), mac_len(0)) == (20, 32, 48, 0)


def test_cli_names() -> None:
    assert parse_cipher("aes-gcm") == 25 and parse_cipher("AES-CBC") == 11
    assert parse_cipher("chacha20-poly1305") == 41
    assert parse_auth("hmac-sha1") == 7 and parse_auth("hmac-sha256") == 18
    assert parse_auth("hmac-sha384") == 19 and parse_auth(None) == 0 and parse_auth("none") == 0
    for bad in (
        lambda: parse_cipher("rc4"),
        lambda: parse_auth("md5"),
        lambda: parse_version("1.4"),
        lambda: parse_version("3"),
    ):
        with pytest.raises(KtlsError) as exc:
            bad()
        assert exc.value.errno == Errno.EINVAL


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("alert", 21),
        ("handshake", 22),
        ("change_cipher_spec", 20),
        ("change-cipher-spec", 20),
        ("application_data", 23),
        ("Application-Data", 23),
        ("21", 21),
        ("0x17", 23),
        ("0", 0),
        ("255", 255),
        (99, 99),
    ],
)
def test_record_type_parsing(text: str | int, value: int) -> None:
    assert parse_record_type(text) == value


@pytest.mark.parametrize("text", ["256", "-1", "alerts", "", 300])
def test_record_type_parsing_refuses(text: str | int) -> None:
    with pytest.raises(KtlsError) as exc:
        parse_record_type(text)
    assert exc.value.errno == Errno.EINVAL


def test_record_type_names() -> None:
    assert record_type_name(21) == "alert" and record_type_name(99) == "99"


# Reference §3 table, plus MAC lengths.
HLEN_TLEN = [
    ((25, 3, 0), (13, 16)),
    ((25, 4, 0), (5, 17)),
    ((41, 3, 0), (5, 16)),
    ((41, 4, 0), (5, 17)),
    ((11, 1, 7), (5, 36)),
    ((11, 2, 7), (21, 36)),
    ((11, 3, 7), (21, 36)),
    ((11, 3, 18), (21, 48)),
    ((11, 3, 19), (21, 64)),
]


@pytest.mark.parametrize(("args", "lengths"), HLEN_TLEN)
def test_hlen_tlen_table(args: tuple[int, int, int], lengths: tuple[int, int]) -> None:
    assert header_trailer_len(*args) == lengths


def test_cbc_trailer_is_mac_plus_minimal_padding() -> None:
    suite = Suite(11, 16, 3, 7)  # SHA1: MAC 20
    for n in range(0, 64):
        pad = suite.trailer_len(n) - 20
        assert 1 <= pad <= 16 and (n + 20 + pad) % 16 == 0
    assert suite.wire_length(0) == 21 + 32 and suite.wire_length(12) == 21 + 48


@pytest.mark.parametrize(
    ("suite", "name", "gauge"),
    [
        (Suite(25, 16, 3), "TLS1.2 AES-128-GCM", "gcm"),
        (Suite(25, 32, 4), "TLS1.3 AES-256-GCM", "gcm"),
        (Suite(41, 32, 3), "TLS1.2 CHACHA20-POLY1305", "chacha20"),
        (Suite(11, 16, 1, 7), "TLS1.0 AES-128-CBC-SHA1", "cbc"),
        (Suite(11, 32, 3, 19), "TLS1.2 AES-256-CBC-SHA384", "cbc"),
    ],
)
def test_suite_names_and_gauges(suite: Suite, name: str, gauge: str) -> None:
    assert suite.name == name and suite.gauge == gauge == gauge_name(suite.cipher)


def test_suite_from_cli_names() -> None:
    suite = Suite.from_names("1.0", "aes-cbc", 32, "hmac-sha1")
    assert suite == Suite(11, 32, 1, 7) and suite.allows_empty
    assert not Suite.from_names("1.1", "aes-cbc", 16, "hmac-sha1").allows_empty
    assert not Suite.from_names("1.3", "aes-gcm", 16).allows_empty
    with pytest.raises(KtlsError):
        gauge_name(99)
