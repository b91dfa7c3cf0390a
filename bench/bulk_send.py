"""Figure 2, bulk send: `ktls send --file F --syscall sendfile --out /dev/null` of 512 MiB.

Three cases, each a whole `ktls send` process against two baselines that are
whole Python processes too (start-up included on both sides), run in the same
rounds, interleaved:

  sw-gcm12     TLS 1.2 AES-128-GCM, software mode (seed kernel, ktls_ocf)
  ifnet-gcm12  TLS 1.2 AES-128-GCM, ifnet mode (ConnectX-6 Dx mce0 with txtls;
               the NIC model seals the records)
  sw-chacha13  TLS 1.3 ChaCha20-Poly1305, software mode (current kernel; no NIC
               of the topology offloads ChaCha20, so there is no ifnet case)

  (a) bare  bench/_bare_aead.py: AESGCM / ChaCha20Poly1305.encrypt_into over the
            same file, 16 KiB at a time, one reused output buffer
  (b) ssl   bench/_ssl_memorybio.py: Python's ssl, server SSLObject writing the
            file through a MemoryBIO in 16 KiB writes, the same suite

Ratio = baseline wall / ktls wall (the throughput ratio, same bytes). Targets:
(a) >= 0.8, (b) >= 1.5; peak RSS of the ktls send (ru_maxrss of the child)
<= 80 MiB. Records are 16 KiB (the sessions' max_frame_len).

    python bench/bulk_send.py [--mib 512] [--rounds 7] [--cases sw-gcm12,...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check, ktls_script, machine, median, prepare, run

HERE = Path(__file__).resolve().parent
LOCAL, FOREIGN = "203.0.113.10:443", "203.0.113.7:50000"
CASES = {
    # name: (profile, sysctls, ifconfig, tls version, cipher, expected mode)
    "sw-gcm12": ("seed", [], None, "1.2", "aes-gcm", "sw"),
    "ifnet-gcm12": ("seed", ["kern.ipc.tls.ifnet.permitted=1"], "mce0", "1.2", "aes-gcm", "ifnet"),
    "sw-chacha13": ("current", [], None, "1.3", "chacha20-poly1305", "sw"),
}
TARGET_BARE, TARGET_SSL, TARGET_RSS_MIB = 0.8, 1.5, 80
CHACHA_CONF = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = TLS_CHACHA20_POLY1305_SHA256
"""


def make_file(path: str, mib: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))


def make_cert(tmp: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def setup_case(ktls: str, tmp: str, name: str) -> dict[str, str]:
    profile, sysctls, ifname, version, cipher, mode = CASES[name]
    env = dict(os.environ, KTLS_STATE=os.path.join(tmp, f"{name}.db"))
    check([ktls, "state", "init", "--profile", profile], env)
    check([ktls, "sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1", *sysctls], env)
    if profile == "seed":
        check([ktls, "kldload", "ktls_ocf"], env)
    if ifname:
        check([ktls, "ifconfig", ifname, "txtls"], env)
    tls = ["--random-keys", "--tls-version", version, "--cipher", cipher]
    check([ktls, "connect", LOCAL, FOREIGN, *tls], env)
    doc = check([ktls, "--format", "json", "send", LOCAL, FOREIGN, "--data", "x"], env)
    if f'"mode":"{mode}"' not in doc:
        sys.exit(f"bench: {name}: the session is not in {mode} mode: {doc}")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    cases = args.cases.split(",")
    prepare()
    ktls = ktls_script()
    tmp = tempfile.mkdtemp(prefix="ktls-bench-")
    data = os.path.join(tmp, "data.bin")
    make_file(data, args.mib)
    cert, key = make_cert(tmp)
    chacha_conf = os.path.join(tmp, "chacha.cnf")
    Path(chacha_conf).write_text(CHACHA_CONF)
    envs = {name: setup_case(ktls, tmp, name) for name in cases}
    py = sys.executable
    argvs: dict[str, dict[str, tuple[list[str], dict[str, str]]]] = {}
    for name in cases:
        version, cipher = CASES[name][3], CASES[name][4]
        aead = "aes-128-gcm" if cipher == "aes-gcm" else cipher
        ssl_env = dict(os.environ, **({"OPENSSL_CONF": chacha_conf} if version == "1.3" else {}))
        argvs[name] = {
            "ktls": (
                [ktls, "send", LOCAL, FOREIGN, "--file", data, "--syscall", "sendfile",
                 "--out", os.devnull],
                envs[name],
            ),
            "bare": ([py, str(HERE / "_bare_aead.py"), "records", data, aead], dict(os.environ)),
            # the same send twice in one process, the second timed: no start-up
            "warm": (
                [py, str(HERE / "_ktls_warm.py"), "send", LOCAL, FOREIGN, "--file", data,
                 "--syscall", "sendfile", "--out", os.devnull],
                envs[name],
            ),
            "ssl": ([py, str(HERE / "_ssl_memorybio.py"), data, cert, key, version], ssl_env),
        }  # fmt: skip
    walls: dict[tuple[str, str], list[float]] = {}
    loops: dict[tuple[str, str], list[float]] = {}
    rss: dict[str, list[int]] = {name: [] for name in cases}
    order = ["bare", "ssl", "ktls", "warm"]
    for name in cases:  # warm-up: page cache, code caches
        for who in order:
            run(*argvs[name][who])
    for rnd in range(args.rounds):
        for name in cases:
            for who in order[rnd % 4 :] + order[: rnd % 4]:
                argv, env = argvs[name][who]
                r = run(argv, env, capture=who != "ktls")  # the others print their loop time
                if r.returncode != 0:
                    sys.exit(f"bench: {name}/{who} failed ({r.returncode}): {r.stderr}")
                walls.setdefault((name, who), []).append(r.wall)
                if who == "ktls":
                    rss[name].append(r.maxrss_kib)
                elif r.stdout:
                    loops.setdefault((name, who), []).append(float(r.stdout))
    mib = args.mib
    print(f"machine: {machine()}")
    print(f"{mib} MiB file, 16 KiB records, {args.rounds} rounds, medians; s = whole process")
    print("(loop) = the baseline's loop alone; (warm) = the ktls send again in the same process")
    print(
        f"{'case':12} {'ktls s':>7} {'(warm)':>7} {'MiB/s':>6} {'bare s':>7} {'(loop)':>7}"
        f" {'ratio':>6} {'ssl s':>7} {'(loop)':>7} {'ratio':>6} {'RSS MiB':>7}  verdict"
    )
    missed = 0
    for name in cases:
        k, b, s = (median(walls[(name, who)]) for who in ("ktls", "bare", "ssl"))
        bl, sl, kw = (median(loops.get((name, who), [0.0])) for who in ("bare", "ssl", "warm"))
        peak = max(rss[name]) / 1024
        ok = b / k >= TARGET_BARE and s / k >= TARGET_SSL and peak <= TARGET_RSS_MIB
        missed += not ok
        print(
            f"{name:12} {k:7.3f} {kw:7.3f} {mib / k:6.0f} {b:7.3f} {bl:7.3f} {b / k:6.2f}"
            f" {s:7.3f} {sl:7.3f} {s / k:6.2f} {peak:7.1f}  {'met' if ok else 'NOT met'}"
        )
    print(
        f"targets: bare/ktls >= {TARGET_BARE}, ssl/ktls >= {TARGET_SSL},"
        f" peak RSS <= {TARGET_RSS_MIB} MiB"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
