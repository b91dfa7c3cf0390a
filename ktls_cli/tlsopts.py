"""The TLS options of `connect`, `setsockopt` and `decode`: the fields of struct tls_enable.

`--tls-version 1.0|1.1|1.2|1.3`, `--cipher aes-gcm|aes-cbc|chacha20-poly1305`,
`--key HEX`, `--iv HEX`, `--auth hmac-sha1|hmac-sha256|hmac-sha384`,
`--auth-key HEX`, `--rec-seq N`, `--keys-from FILE` (YAML, so keys stay out of
ps(1) and shell history) and `--random-keys` (every missing key, IV and auth key
drawn from the kernel's arc4rand() in the size the suite needs). Options given
on the command line override the file. Defaults: TLS 1.2, AES-GCM.
Hex may contain `:`, `-` or blanks between bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ktls_core.tls.enable import TlsEnable

F = TypeVar("F", bound=Callable[..., Any])

VERSIONS = ("1.0", "1.1", "1.2", "1.3")
CIPHERS = ("aes-gcm", "aes-cbc", "chacha20-poly1305")
AUTHS = ("hmac-sha1", "hmac-sha256", "hmac-sha384")
FILE_KEYS = {
    "tls_version": "version",
    "tls-version": "version",
    "version": "version",
    "cipher": "cipher",
    "key": "key",
    "iv": "iv",
    "auth": "auth",
    "auth_key": "auth_key",
    "auth-key": "auth_key",
    "rec_seq": "rec_seq",
    "rec-seq": "rec_seq",
}
OPTION_NAMES = ("tls_version", "cipher", "key", "iv", "auth", "auth_key", "rec_seq")


class TlsOptionError(click.UsageError):
    """A TLS option that cannot be read (bad hex, bad file): a usage error, exit 2."""


def parse_hex(text: str, what: str) -> bytes:
    cleaned = "".join(c for c in text if c not in ": -\t\n")
    if cleaned.startswith(("0x", "0X")):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise TlsOptionError(f"Invalid value for '{what}': not hexadecimal bytes") from None


def _hex_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    return parse_hex(value, param.opts[0])


def tls_options(func: F) -> F:
    """Add the TLS options to a click command (keyword arguments, see OPTION_NAMES)."""
    decorators = [
        click.option("--tls-version", type=click.Choice(VERSIONS), help="TLS version."),
        click.option("--cipher", type=click.Choice(CIPHERS), help="Cipher (default aes-gcm)."),
        click.option("--key", metavar="HEX", callback=_hex_callback, help="Cipher key."),
        click.option("--iv", metavar="HEX", callback=_hex_callback, help="IV / salt."),
        click.option("--auth", type=click.Choice(AUTHS), help="HMAC for aes-cbc."),
        click.option("--auth-key", metavar="HEX", callback=_hex_callback, help="HMAC key."),
        click.option(
            "--rec-seq",
            type=click.IntRange(0, 2**64 - 1),
            help="First record sequence number (current profile).",
        ),
        click.option(
            "--keys-from",
            type=click.Path(dir_okay=False),
            help="YAML file with the options above (keeps keys out of ps).",
        ),
        click.option("--random-keys", is_flag=True, help="Draw missing keys and IVs at random."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@dataclass(frozen=True)
class TlsOptions:
    version: str | None = None
    cipher: str | None = None
    key: bytes | None = None
    iv: bytes | None = None
    auth: str | None = None
    auth_key: bytes | None = None
    rec_seq: int | None = None
    random_keys: bool = False

    @property
    def given(self) -> bool:
        return self.random_keys or any(
            getattr(self, f) is not None
            for f in ("version", "cipher", "key", "iv", "auth", "auth_key", "rec_seq")
        )

    def __repr__(self) -> str:  # keys never print
        return f"TlsOptions(version={self.version!r}, cipher={self.cipher!r}, ...)"


def collect(kwargs: dict[str, Any]) -> TlsOptions:
    """The options of one command (popped from kwargs), merged over --keys-from."""
    values: dict[str, Any] = {}
    path = kwargs.pop("keys_from", None)
    if path is not None:
        values.update(_read_file(path))
    cli = {
        "version": kwargs.pop("tls_version", None),
        "cipher": kwargs.pop("cipher", None),
        "key": kwargs.pop("key", None),
        "iv": kwargs.pop("iv", None),
        "auth": kwargs.pop("auth", None),
        "auth_key": kwargs.pop("auth_key", None),
        "rec_seq": kwargs.pop("rec_seq", None),
    }
    values.update({k: v for k, v in cli.items() if v is not None})
    return TlsOptions(random_keys=bool(kwargs.pop("random_keys", False)), **values)


def _read_file(path: str) -> dict[str, Any]:
    import yaml

    where = f"--keys-from {path}"
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise TlsOptionError(f"{where}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise TlsOptionError(f"{where}: not a YAML file") from None
    if not isinstance(data, dict):
        raise TlsOptionError(f"{where}: expected a mapping of TLS options")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        name = FILE_KEYS.get(str(raw_key))
        if name is None:
            raise TlsOptionError(f"{where}: unknown key '{raw_key}'")
        if name in ("key", "iv", "auth_key"):
            out[name] = parse_hex(str(value), f"{raw_key} in {path}")
        elif name == "rec_seq":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TlsOptionError(f"{where}: rec_seq must be a non-negative integer")
            out[name] = value
        else:
            text = str(value)
            allowed = {"version": VERSIONS, "cipher": CIPHERS, "auth": AUTHS}[name]
            if text not in allowed:
                raise TlsOptionError(f"{where}: {raw_key} must be one of {', '.join(allowed)}")
            out[name] = text
    return out


def random_sizes(opts: TlsOptions) -> tuple[int, int, int]:
    """(key, iv, auth key) lengths --random-keys draws for the suite asked for."""
    from ktls_core.tls.suites import MAC_LEN, parse_auth

    version = opts.version or "1.2"
    cipher = opts.cipher or "aes-gcm"
    if cipher == "aes-gcm":
        return 16, (4 if version != "1.3" else 12), 0
    if cipher == "chacha20-poly1305":
        return 32, 12, 0
    mac = MAC_LEN.get(parse_auth(opts.auth), 0)
    return 16, (16 if version == "1.0" else 0), mac


def to_enable(opts: TlsOptions, random_bytes: Callable[[int], bytes]) -> TlsEnable:
    """struct tls_enable from the options; random parts from the kernel's arc4rand()."""
    from ktls_core.tls.enable import TlsEnable
    from ktls_core.tls.suites import parse_auth, parse_cipher, parse_version

    key, iv, auth_key = opts.key, opts.iv, opts.auth_key
    if opts.random_keys:
        klen, ivlen, alen = random_sizes(opts)
        key = key if key is not None else random_bytes(klen)
        iv = iv if iv is not None else random_bytes(ivlen) if ivlen else b""
        auth_key = auth_key if auth_key is not None else random_bytes(alen) if alen else b""
    return TlsEnable(
        cipher_algorithm=parse_cipher(opts.cipher or "aes-gcm"),
        cipher_key=key or b"",
        iv=iv or b"",
        auth_algorithm=parse_auth(opts.auth),
        auth_key=auth_key or b"",
        tls_vminor=parse_version(opts.version or "1.2"),
        rec_seq=opts.rec_seq,
    )


def session_keys(opts: TlsOptions) -> Any:
    """SessionKeys for `decode` (the peer's side): no randomness, every key given."""
    from ktls_core.tls.record import SessionKeys

    if opts.key is None:
        raise TlsOptionError("decode needs --key (or --keys-from), or a connection")
    return SessionKeys.from_names(
        opts.version or "1.2",
        opts.cipher or "aes-gcm",
        opts.key,
        opts.iv or b"",
        opts.auth,
        opts.auth_key or b"",
    )
