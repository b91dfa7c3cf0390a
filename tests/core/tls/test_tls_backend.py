"""Backend registry (ktls_crypto_backend_register / ktls_try_sw) and the OCF backend."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import oracle
import pytest

from ktls_core.errors import Errno, KtlsError
from ktls_core.tls.backend import Backend, Registry, register_message, select_backend
from ktls_core.tls.enable import TlsEnable
from ktls_core.tls.ocf import CURRENT_COUNTERS, REGISTER_MESSAGE, SEED_COUNTERS, OcfBackend
from ktls_core.tls.record import RecordProtector

GCM, CBC, CHACHA = 25, 11, 41
SHA1, SHA256, SHA384 = 7, 18, 19


def gcm(vminor: int = 3, key: int = 16) -> TlsEnable:
    return TlsEnable(GCM, bytes(range(key)), bytes(4 if vminor == 3 else 12), tls_vminor=vminor)


def cbc(vminor: int = 3, auth: int = SHA1, key: int = 16) -> TlsEnable:
    mac = {SHA1: 20, SHA256: 32, SHA384: 48}.get(auth, 20)
    return TlsEnable(
        CBC,
        bytes(key),
        bytes(16 if vminor == 1 else 0),
        auth_algorithm=auth,
        auth_key=bytes(mac),
        tls_vminor=vminor,
    )


def chacha(vminor: int = 3, key: int = 32) -> TlsEnable:
    return TlsEnable(CHACHA, bytes(key), bytes(12), tls_vminor=vminor)


@dataclass
class FakeBackend:
    name: str
    prio: int
    accepts: bool = True
    calls: list[str] = field(default_factory=list)

    def try_session(self, params: TlsEnable, era: str) -> None:
        self.calls.append(era)
        if not self.accepts:
            raise KtlsError(Errno.EPROTONOSUPPORT, f"{self.name} refuses")

    def new_protector(self, params: TlsEnable, max_frame_len: int = 16384) -> RecordProtector:
        raise AssertionError("not used")

    def ocf_counter(self, params: TlsEnable, era: str) -> str | None:
        return None


def test_register_message_is_the_kernel_line() -> None:
    assert REGISTER_MESSAGE == "KTLS: Registering crypto method OCF with prio 5"
    assert Registry().register(OcfBackend()) == REGISTER_MESSAGE
    assert register_message(FakeBackend("ISA-L", 10)) == (
        "KTLS: Registering crypto method ISA-L with prio 10"
    )


def test_registry_orders_by_priority_then_load_order() -> None:
    reg = Registry()
    for name, prio in [("a", 5), ("b", 10), ("c", 5), ("d", 1), ("e", 10)]:
        reg.register(FakeBackend(name, prio))
    assert [b.name for b in reg] == ["b", "e", "a", "c", "d"]
    with pytest.raises(KtlsError) as exc:
        reg.register(FakeBackend("a", 99))
    assert exc.value.errno == Errno.EEXIST
    reg.deregister("e")
    reg.deregister("nonexistent")  # MOD_UNLOAD handlers may call it unconditionally
    assert [b.name for b in reg.backends] == ["b", "a", "c", "d"] and len(reg) == 4


def test_seed_tries_backends_in_priority_order_and_takes_the_first_yes() -> None:
    high, ocf = FakeBackend("HIGH", 10, accepts=False), OcfBackend()
    reg = Registry([ocf, high])
    assert reg.select(gcm(), "seed") is ocf
    assert high.calls == ["seed"]
    eager = FakeBackend("EAGER", 20)
    reg.register(eager)
    assert select_backend(reg, gcm(), "seed") is eager


@pytest.mark.parametrize(
    "params",
    [gcm(key=24), cbc(), chacha(), gcm(vminor=2)],
    ids=["gcm-192", "cbc", "chacha", "gcm-tls11"],
)
def test_seed_hides_backend_errors_behind_eopnotsupp(params: TlsEnable) -> None:
    reg = Registry([OcfBackend()])
    with pytest.raises(KtlsError) as exc:
        reg.select(params, "seed")
    assert exc.value.errno == Errno.EOPNOTSUPP
    assert "OCF" in exc.value.detail


def test_no_backend_loaded_is_eopnotsupp_in_both_eras() -> None:
    for era in ("seed", "current"):
        with pytest.raises(KtlsError) as exc:
            Registry().select(gcm(), era)
        assert exc.value.errno == Errno.EOPNOTSUPP


# ktls_ocf_try(): key size EINVAL before version EPROTONOSUPPORT
OCF_CURRENT = [
    (gcm(), None),
    (gcm(key=32), None),
    (gcm(vminor=4), None),
    (gcm(vminor=4, key=32), None),
    (gcm(key=24), Errno.EINVAL),
    (gcm(vminor=2), Errno.EPROTONOSUPPORT),
    (gcm(vminor=2, key=24), Errno.EINVAL),
    (cbc(vminor=1), None),
    (cbc(vminor=2), None),
    (cbc(), None),
    (cbc(key=32), None),
    (cbc(auth=SHA256), None),
    (cbc(auth=SHA384), None),
    (cbc(key=24), Errno.EINVAL),
    (cbc(auth=0), Errno.EINVAL),
    (cbc(vminor=4), Errno.EPROTONOSUPPORT),
    (chacha(), None),
    (chacha(vminor=4), None),
    (chacha(key=16), Errno.EINVAL),
    (chacha(vminor=2), Errno.EPROTONOSUPPORT),
    (TlsEnable(99, bytes(16), b""), Errno.EPROTONOSUPPORT),
]
OCF_SEED = [
    (gcm(), None),
    (gcm(key=32), None),
    (gcm(vminor=4), None),
    (gcm(key=24), Errno.EINVAL),
    (gcm(vminor=2), Errno.EPROTONOSUPPORT),
    (cbc(), Errno.EPROTONOSUPPORT),
    (chacha(), Errno.EPROTONOSUPPORT),
]


@pytest.mark.parametrize(
    ("era", "params", "errno"),
    [("current", p, e) for p, e in OCF_CURRENT] + [("seed", p, e) for p, e in OCF_SEED],
)
def test_ocf_try(era: str, params: TlsEnable, errno: Errno | None) -> None:
    ocf = OcfBackend()
    if errno is None:
        ocf.try_session(params, era)
        assert Registry([ocf]).select(params, era) is ocf
        return
    with pytest.raises(KtlsError) as exc:
        ocf.try_session(params, era)
    assert exc.value.errno == errno
    with pytest.raises(KtlsError) as exc:
        Registry([ocf]).select(params, era)
    # modern returns ktls_ocf_try's error; 2019's ktls_try_sw says EOPNOTSUPP
    assert exc.value.errno == (errno if era == "current" else Errno.EOPNOTSUPP)


OCF_COUNTERS = [
    ("seed", gcm(), "tls12_gcm_crypts"),
    ("seed", gcm(vminor=4), "tls13_gcm_crypts"),
    ("seed", cbc(), None),
    ("seed", chacha(), None),
    ("current", cbc(vminor=1), "tls10_cbc_encrypts"),
    ("current", cbc(vminor=2), "tls11_cbc_encrypts"),
    ("current", cbc(), "tls11_cbc_encrypts"),  # ktls_ocf.c: "TLS 1.1/1.2 CBC encryption"
    ("current", cbc(auth=SHA384), "tls11_cbc_encrypts"),
    ("current", gcm(), "tls12_gcm_encrypts"),
    ("current", gcm(vminor=4), "tls13_gcm_encrypts"),
    ("current", chacha(), "tls12_chacha20_encrypts"),
    ("current", chacha(vminor=4), "tls13_chacha20_encrypts"),
]


@pytest.mark.parametrize(("era", "params", "name"), OCF_COUNTERS)
def test_ocf_counter_names(era: str, params: TlsEnable, name: str | None) -> None:
    assert OcfBackend().ocf_counter(params, era) == name
    if name is not None:
        assert name in (SEED_COUNTERS if era == "seed" else CURRENT_COUNTERS)


@pytest.mark.parametrize(
    "params",
    [gcm(), gcm(vminor=4, key=32), chacha(), cbc(vminor=1), cbc(auth=SHA256)],
    ids=lambda p: p.suite.name,
)
def test_ocf_protector_seals_what_the_oracle_reads(params: TlsEnable) -> None:
    backend: Backend = OcfBackend()
    prot = backend.new_protector(params, max_frame_len=1000)
    assert prot.max_frame_len == 1000
    explicit = {"counter": 42, "chain": params.iv, "random": bytes(range(16)), "none": None}[
        prot.explicit_kind
    ]
    wire = prot.seal(23, b"payload", 3, explicit)
    suite = {
        "version": params.suite.version,
        "cipher": {GCM: "aes-gcm", CBC: "aes-cbc", CHACHA: "chacha20-poly1305"}[
            params.cipher_algorithm
        ],
        "key": params.cipher_key,
        "iv": params.iv,
        "auth": {SHA1: "hmac-sha1", SHA256: "hmac-sha256", SHA384: "hmac-sha384"}.get(
            params.auth_algorithm
        ),
        "auth_key": params.auth_key,
    }
    assert oracle.decrypt_stream(wire, suite, 3) == [(23, b"payload")]


def test_importing_the_record_layer_does_not_load_cryptography() -> None:
    code = (
        "import sys\n"
        "import ktls_core.tls.suites, ktls_core.tls.enable, ktls_core.tls.backend\n"
        "import ktls_core.tls.ocf, ktls_core.tls.record, ktls_core.wire.decode\n"
        "from ktls_core.tls.ocf import OcfBackend\n"
        "from ktls_core.tls.backend import Registry\n"
        "from ktls_core.tls.enable import TlsEnable\n"
        "Registry([OcfBackend()]).select(TlsEnable(25, bytes(16), bytes(4)), 'current')\n"
        "assert not [m for m in sys.modules if m.startswith('cryptography')], 'loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
