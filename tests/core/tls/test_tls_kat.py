"""Known-answer vectors (peers-and-vectors.md §5) through the record layer, decoder and oracle."""

from __future__ import annotations

import oracle
import pytest
from tls_cases import hkdf_expand_label, tls12_prf

from ktls_core.tls.record import SessionKeys, make_protector
from ktls_core.wire.decode import BadRecord, DecodedRecord, decode_stream

# --- V1: RFC 8448 §3 (Simple 1-RTT), TLS_AES_128_GCM_SHA256 ---------------------

RFC8448_PAYLOAD = bytes(range(50))
RFC8448 = {
    "client": {
        "secret": "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
        "key": "17422dda596ed5d9acd890e3c63f5051",
        "iv": "5b78923dee08579033e523d9",
        "data_seq": 0,
        "data": "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b"
        "395bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4",
        "close_seq": 1,
        "close": "1703030013c9872760655666b74d7ff1153efd6db6d0b0e3",
    },
    "server": {
        "secret": "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
        "key": "9f02283b6c9c07efc26bb9f2ac92e356",
        "iv": "cf782b88dd83549aadf1e984",
        "data_seq": 1,  # seq 0 was the NewSessionTicket
        "data": "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90"
        "e6dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d",
        "close_seq": 2,
        "close": "1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9",
    },
}
CLOSE_NOTIFY = b"\x01\x00"  # warning, close_notify


@pytest.mark.parametrize("side", ["client", "server"])
def test_rfc8448_key_schedule_gives_the_published_key_and_iv(side: str) -> None:
    v = RFC8448[side]
    secret = bytes.fromhex(v["secret"])
    assert hkdf_expand_label(secret, "key", b"", 16).hex() == v["key"]
    assert hkdf_expand_label(secret, "iv", b"", 12).hex() == v["iv"]


@pytest.mark.parametrize("side", ["client", "server"])
def test_rfc8448_application_data_and_close_notify_seal_byte_exact(side: str) -> None:
    v = RFC8448[side]
    keys = SessionKeys.from_names("1.3", "aes-gcm", bytes.fromhex(v["key"]), bytes.fromhex(v["iv"]))
    prot = make_protector(keys)
    assert prot.seal(23, RFC8448_PAYLOAD, v["data_seq"]).hex() == v["data"]
    assert prot.seal(21, CLOSE_NOTIFY, v["close_seq"]).hex() == v["close"]


@pytest.mark.parametrize("side", ["client", "server"])
def test_rfc8448_stream_opens_in_decoder_and_oracle(side: str) -> None:
    v = RFC8448[side]
    key, iv = bytes.fromhex(v["key"]), bytes.fromhex(v["iv"])
    stream = bytes.fromhex(v["data"] + v["close"])
    assert v["close_seq"] == v["data_seq"] + 1
    suite = {"version": "1.3", "cipher": "aes-gcm", "key": key, "iv": iv}
    assert oracle.decrypt_stream(stream, suite, v["data_seq"]) == [
        (23, RFC8448_PAYLOAD),
        (21, CLOSE_NOTIFY),
    ]
    events = decode_stream(SessionKeys.from_names("1.3", "aes-gcm", key, iv), stream, v["data_seq"])
    assert [(e.seq, e.type, e.plaintext) for e in events if isinstance(e, DecodedRecord)] == [
        (v["data_seq"], 23, RFC8448_PAYLOAD),
        (v["close_seq"], 21, CLOSE_NOTIFY),
    ]
    assert len(events) == 2


def test_rfc8448_wrong_sequence_number_fails_everywhere() -> None:
    v = RFC8448["server"]
    key, iv = bytes.fromhex(v["key"]), bytes.fromhex(v["iv"])
    stream = bytes.fromhex(v["data"])
    with pytest.raises(ValueError):
        oracle.decrypt_stream(
            stream, {"version": "1.3", "cipher": "aes-gcm", "key": key, "iv": iv}, 0
        )
    (event,) = decode_stream(SessionKeys.from_names("1.3", "aes-gcm", key, iv), stream, 0)
    assert isinstance(event, BadRecord) and event.errno == 89


# --- V3: tlslite-ng unit_tests/test_tlslite_recordlayer.py, TLS 1.3 "test" ------

TLSLITE_13 = [
    # (cipher, secret length, hash, key length, record body)
    ("aes-gcm", 32, "sha256", 16, "e1902dd1fd75dda0b156594226e805b17ee5759a0f"),
    ("aes-gcm", 48, "sha384", 32, "7d17775f23fc5caf1e66360358d2e31ce45dcbb7bb"),
    # ChaCha20: tlslite feeds 48 zero bytes as a SHA-256 traffic secret
    ("chacha20-poly1305", 48, "sha256", 32, "6f9f4f1607bd55791745360ad99c54ecda761fb424"),
]


@pytest.mark.parametrize(("cipher", "slen", "hash_name", "klen", "body"), TLSLITE_13)
def test_tlslite_tls13_vectors(
    cipher: str, slen: int, hash_name: str, klen: int, body: str
) -> None:
    secret = bytes(slen)
    key = hkdf_expand_label(secret, "key", b"", klen, hash_name)
    iv = hkdf_expand_label(secret, "iv", b"", 12, hash_name)
    keys = SessionKeys.from_names("1.3", cipher, key, iv)
    wire = bytes.fromhex("1703030015" + body)
    assert make_protector(keys).seal(23, b"test", 0) == wire
    suite = {"version": "1.3", "cipher": cipher, "key": key, "iv": iv}
    assert oracle.decrypt_stream(wire, suite, 0) == [(23, b"test")]
    (event,) = decode_stream(keys, wire, 0)
    assert isinstance(event, DecodedRecord) and event.plaintext == b"test"


# tlslite-ng test_sendRecord_with_encrypting_set_up_tls1_2: TLS_RSA_WITH_AES_128_CBC_SHA,
# master secret and both randoms all zero, client write keys, seq 0, "test". tlslite
# prepends a random (zero) block and encrypts it with the key-block IV, so on the wire
# the first body block is the explicit IV every receiver uses.
TLSLITE_CBC_BODY = bytes.fromhex(
    "48261fc19cde2292dde47cfc6f2952d6c5ec4421cae3d13464adffb1eafad5e3"
    "9f73eca9a682558e3a8c9496da06098d"
)


def _tlslite_cbc_keys() -> tuple[bytes, bytes]:
    block = tls12_prf(bytes(48), b"key expansion", bytes(32) + bytes(32), 2 * 20 + 2 * 16)
    return block[40:56], block[0:20]  # client_write_key, client_write_MAC_key


def test_tlslite_tls12_aes128_cbc_sha1_vector() -> None:
    key, mac_key = _tlslite_cbc_keys()
    keys = SessionKeys.from_names("1.2", "aes-cbc", key, b"", "hmac-sha1", mac_key)
    wire = bytes.fromhex("1703030030") + TLSLITE_CBC_BODY
    prot = make_protector(keys)
    assert prot.seal(23, b"test", 0, TLSLITE_CBC_BODY[:16]) == wire
    assert prot.open_record(wire[:5], wire[5:], 0) == (23, b"test")
    suite = {
        "version": "1.2",
        "cipher": "aes-cbc",
        "key": key,
        "iv": b"",
        "auth": "hmac-sha1",
        "auth_key": mac_key,
    }
    assert oracle.decrypt_stream(wire, suite, 0) == [(23, b"test")]


# --- Gap: TLS 1.2 AEAD records, Linux selftest settings (all-zero key, salt/iv and
# explicit nonce = seq), "Hello world". SELF-DERIVED in the reference (computed with
# cryptography, not cross-checked against a kernel): they pin framing, nonce and AAD
# layout, and the oracle below is an independent second reading of the RFCs.
HELLO = b"Hello world"
GAP = [
    # (cipher, key length, iv length, seq, header(5) | explicit nonce(8, GCM) | ct | tag)
    (
        "aes-gcm",
        16,
        4,
        0,
        "170303002300000000000000004bedb6a20f96d4fd8144a6b9c8b0f669622e8c75a707fa8d97541a",
    ),
    (
        "aes-gcm",
        16,
        4,
        1,
        "170303002300000000000000012664b55c68a805d2295e88ee0e0e396b2f1ad8f8a13ab614ba07cd",
    ),
    (
        "aes-gcm",
        32,
        4,
        0,
        "1703030023000000000000000086c22c5122401c017522a128c5baaaf34e4a6d07f65627019c46d6",
    ),
    (
        "chacha20-poly1305",
        32,
        12,
        0,
        "170303001bd7628bd23a714f15ead6f380335e38fded17145371f0ce370c19e3",
    ),
    (
        "chacha20-poly1305",
        32,
        12,
        1,
        "170303001b60502b8fbcf3798f45707ae572e5370374c77ac107e27018cb8286",
    ),
]


@pytest.mark.parametrize(("cipher", "klen", "ivlen", "seq", "wire"), GAP)
def test_zero_key_tls12_aead_vectors(
    cipher: str, klen: int, ivlen: int, seq: int, wire: str
) -> None:
    keys = SessionKeys.from_names("1.2", cipher, bytes(klen), bytes(ivlen))
    explicit = seq if cipher == "aes-gcm" else None
    assert make_protector(keys).seal(23, HELLO, seq, explicit).hex() == wire
    suite = {"version": "1.2", "cipher": cipher, "key": bytes(klen), "iv": bytes(ivlen)}
    assert oracle.decrypt_stream(bytes.fromhex(wire), suite, seq) == [(23, HELLO)]


def test_gcm12_explicit_nonce_is_not_the_sequence_number() -> None:
    # FreeBSD's nonce counter starts at random: seq 0 with counter 1 is the Gap seq-1
    # ciphertext only if the AAD's seq were 1 too; it is not, so the bytes differ.
    keys = SessionKeys.from_names("1.2", "aes-gcm", bytes(16), bytes(4))
    rec = make_protector(keys).seal(23, HELLO, 0, 1)
    assert rec[5:13] == (1).to_bytes(8, "big")
    assert rec.hex() != GAP[1][4]
    suite = {"version": "1.2", "cipher": "aes-gcm", "key": bytes(16), "iv": bytes(4)}
    assert oracle.decrypt_stream(rec, suite, 0) == [(23, HELLO)]
    with pytest.raises(ValueError):
        oracle.decrypt_stream(rec, suite, 1)
