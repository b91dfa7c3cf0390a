"""TLS 1.3 full records sealed by the batched fast path (record._Tls13Group)."""

from __future__ import annotations

import os

import oracle
import pytest

from ktls_core.tls.record import SessionKeys, Tls13Protector, make_protector

SUITES = [("aes-gcm", 16), ("aes-gcm", 32), ("chacha20-poly1305", 32)]


@pytest.mark.parametrize(("cipher", "klen"), SUITES)
def test_types_change_between_streams_on_one_group(cipher: str, klen: int) -> None:
    keys = SessionKeys.from_names("1.3", cipher, os.urandom(klen), os.urandom(12))
    prot = make_protector(keys, 1000)
    assert isinstance(prot, Tls13Protector)
    suite = {"version": "1.3", "cipher": cipher, "key": keys.key, "iv": keys.iv}
    seq = 2**40
    for rtype in (23, 22, 21, 23):
        data = os.urandom(1000 * 70 + 3)  # two chunks of full records (64 + 6), a short one
        wire = b"".join(bytes(c) for c in prot.seal_stream(rtype, data, seq))
        records = oracle.decrypt_stream(wire, suite, seq)
        assert [t for t, _ in records] == [rtype] * 71
        assert b"".join(p for _, p in records) == data
        seq += 71
