"""Fixtures every test module may use (pytest runs with --import-mode=importlib, so
helpers are fixtures rather than imports; each returns the function named below).

- `state`: a path (str) for a fresh state in the test's tmp dir. Nothing exists
  there yet: the first command boots the default profile, or call
  `init_state(state, "current")` first.
- `ktls(*args, input=None, env=None) -> Result`: `run_ktls` bound to `state`.
- `run_ktls(*args, state=None, input=None, env=None) -> Result`: runs
  `ktls_cli.main.main(argv)` in-process; Result has .exit, .stdout, .stderr and
  .stdout_bytes. Internal errors raise (KTLS_DEBUG=1) instead of printing.
- `init_state(state, profile="seed", *options) -> Result`: `ktls state init`, asserted.
- `require_tool(name) -> str`: the path of an outside program (mandoc, openssl, ...);
  skips the test when it is missing, fails instead under KTLS_REQUIRE_TOOLS=1 (CI).
- `check_golden(relpath, text)`: compares with tests/golden/<relpath>; run with
  KTLS_UPDATE_GOLDEN=1 to (re)write the file, then read the diff before committing.
- `ktls_subprocess(*args, state=None, env=None, input=None) -> CompletedProcess`: the
  CLI in a real process (`python -m ktls_cli.main`), for imports, concurrency, shells.

Every test also runs with KTLS_STATE and XDG_STATE_HOME pointing into its tmp dir,
so nothing ever touches the user's real state.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).parent.parent


@dataclass
class Result:
    exit: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    def __repr__(self) -> str:  # what pytest shows when an assertion fails
        return f"Result(exit={self.exit}, stdout={self.stdout!r}, stderr={self.stderr!r})"


@contextlib.contextmanager
def _environ(changes: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_ktls(
    *args: Any,
    state: str | os.PathLike[str] | None = None,
    input: str | bytes | None = None,
    env: dict[str, str | None] | None = None,
) -> Result:
    """Run `ktls [--state STATE] ARGS...` in this process and capture what it prints."""
    from ktls_cli.main import main

    argv = (["--state", os.fspath(state)] if state is not None else []) + [str(a) for a in args]
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    # Text streams over byte buffers: `sysctl -b` writes to stdout.buffer.
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", newline="", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", newline="", write_through=True)
    data = input.encode() if isinstance(input, str) else (input or b"")
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    changes: dict[str, str | None] = {"KTLS_DEBUG": "1"}
    changes.update(env or {})
    saved_stdin = sys.stdin
    try:
        sys.stdin = stdin
        with (
            _environ(changes),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main(argv)
        out.flush()
        err.flush()
        raw = out_bytes.getvalue()
        return Result(
            exit=code,
            stdout=raw.decode("utf-8", errors="replace"),
            stderr=err_bytes.getvalue().decode("utf-8", errors="replace"),
            stdout_bytes=raw,
        )
    finally:
        sys.stdin = saved_stdin


def _init_state(state: str | os.PathLike[str], profile: str = "seed", *options: str) -> Result:
    """`ktls state init --profile PROFILE OPTIONS...`; fails the test if it fails."""
    result = _run_ktls("state", "init", "--profile", profile, *options, state=state)
    assert result.exit == 0, result
    return result


def _ktls_subprocess(
    *args: Any,
    state: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, as a shell would run it."""
    argv = [sys.executable, "-m", "ktls_cli.main"]
    argv += ["--state", os.fspath(state)] if state is not None else []
    argv += [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        argv, capture_output=True, text=True, env=full_env, input=input, timeout=timeout
    )


def _require_tool(name: str) -> str:
    """The path of `name`; skip without it, or fail when KTLS_REQUIRE_TOOLS=1 (CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("KTLS_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message} (KTLS_REQUIRE_TOOLS=1: .ci/run installs it)")
        pytest.skip(message)
    return path


def _check_golden(relpath: str, text: str | bytes) -> None:
    """Assert `text` equals tests/golden/<relpath> (KTLS_UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / relpath
    data = text.encode() if isinstance(text, str) else text
    if os.environ.get("KTLS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), f"no golden file {path} (run with KTLS_UPDATE_GOLDEN=1, then review)"
    expected = path.read_bytes()
    if isinstance(text, str):
        assert text == expected.decode(), f"output differs from {path}"
    else:
        assert data == expected, f"output differs from {path}"


class Ktls(Protocol):
    def __call__(
        self, *args: Any, input: str | bytes | None = ..., env: dict[str, str | None] | None = ...
    ) -> Result: ...


@pytest.fixture(autouse=True)
def _private_state_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A command run without --state must not find (or create) the user's state.
    monkeypatch.setenv("KTLS_STATE", str(tmp_path / "default-state" / "kernel.db"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def state(tmp_path: Path) -> str:
    """A path for a fresh state (not created yet) in this test's tmp dir."""
    return str(tmp_path / "state" / "kernel.db")


@pytest.fixture
def ktls(state: str) -> Ktls:
    """`run_ktls` bound to the `state` fixture."""

    def run(
        *args: Any, input: str | bytes | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        return _run_ktls(*args, state=state, input=input, env=env)

    return run


@pytest.fixture
def run_ktls() -> Callable[..., Result]:
    return _run_ktls


@pytest.fixture
def init_state() -> Callable[..., Result]:
    return _init_state


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    return _require_tool


@pytest.fixture
def check_golden() -> Callable[[str, str | bytes], None]:
    return _check_golden


@pytest.fixture
def ktls_subprocess() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _ktls_subprocess


@dataclass(frozen=True)
class Cert:
    cert: str
    key: str


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed RSA certificate for localhost / 127.0.0.1 (RSA: the ECDHE-RSA suites),
    shared by the handshake, send --connect and serve tests."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    d = tmp_path_factory.mktemp("cert")
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (d / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Cert(str(d / "cert.pem"), str(d / "key.pem"))
