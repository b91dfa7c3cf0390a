"""Resource bounds: what a command holds in memory does not grow with the data.

- `--data` and `--hex` take at most 1 MiB (send.MAX_INLINE) of bytes, counted after
  UTF-8 encoding or hex decoding; past it, a usage error that points at --file, and
  nothing is reserved. (Linux passes at most 128 KiB in one argument anyway.)
- The kernel message buffer keeps the last kernel.DMESG_LINES lines: the table never
  holds more than that plus one pruning step, whatever is logged.
- Peak RSS (resource.getrusage(RUSAGE_CHILDREN) of a wrapper process that runs one
  `ktls` and nothing else) of a 256 MiB send is within a few MiB of a 1 MiB send with
  the same options, for: --trace (events streamed to stderr), --pcap, --out -,
  --stdin, --format json, --format yaml, --libxo json,pretty (records streamed into
  the document), and for `decode` of the 256 MiB stream, as text and as JSON.
- Inputs read whole (sysctl -f, state import, decode --pcap, --keys-from) are read
  only as far as needed to refuse an endless one (/dev/zero).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ktls_cli.commands.send_run import MAX_INLINE
from ktls_core.kernel import DMESG_LINES, Kernel

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = ["--key", "00" * 16, "--iv", "a0a1a2a3"]
BIG = 256 << 20
SMALL = 16 << 20  # several batches (4 MiB): the buffers are all there already
SLACK_KB = 8 << 10  # 8 MiB: allocator noise, not the data (256 MiB); measured < 1 MiB

PROBE = r"""
import os, resource, subprocess, sys
stdin = open(os.environ["PROBE_STDIN"], "rb") if os.environ.get("PROBE_STDIN") else None
r = subprocess.run(sys.argv[1:], stdin=stdin, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_kb(state: str, args: list[str], stdin: Path | None = None) -> int:
    """The peak RSS of one `ktls` process, in KiB (Linux ru_maxrss)."""
    import os

    env = dict(os.environ, PROBE_STDIN=str(stdin) if stdin else "")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, sys.executable, "-m", "ktls_cli.main", "--state", state,
         *args],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    assert out[0] == "0", (args, out)
    return int(out[1])


@pytest.fixture
def ready(ktls: Any, init_state: Any, state: str) -> None:
    init_state(state, "current")
    assert ktls("sysctl", "kern.ipc.tls.enable=1").exit == 0
    assert ktls("connect", *CONN, *KEY).exit == 0


def test_inline_data_is_bounded(ready: None, ktls: Any) -> None:
    export = ktls("state", "export", "--include-keys").stdout
    too_big = [
        ["--data", "x" * (MAX_INLINE + 1)],
        ["--data", "é" * (MAX_INLINE // 2 + 1)],  # 2 bytes each in UTF-8
        ["--hex", "ab" * (MAX_INLINE + 1)],
        ["--hex", ":".join(["ab"] * (MAX_INLINE + 1))],
        ["--hex", "ab" * (2 * MAX_INLINE)],
    ]
    for source in too_big:
        r = ktls("send", *CONN, *source)
        assert r.exit == 2 and r.stdout == "", source[0]
        assert r.stderr.endswith(f"Invalid value for '{source[0]}': more than 1 MiB: use --file\n")
    assert ktls("state", "export", "--include-keys").stdout == export  # nothing reserved
    for source in (["--data", "x" * MAX_INLINE], ["--hex", ":".join(["ab"] * MAX_INLINE)]):
        r = ktls("--format", "json", "send", *CONN, *source)
        assert r.exit == 0 and f'"bytes":{MAX_INLINE},' in r.stdout, source[0]


def test_dmesg_ring_is_bounded(ready: None, ktls: Any, state: str) -> None:
    kernel = Kernel.open(state)
    try:
        for batch in range(6):
            with kernel.transaction() as tx:
                for i in range(1000):
                    tx.log(f"line {batch * 1000 + i}")
                held = tx.conn.execute("SELECT count(*) FROM dmesg").fetchone()[0]
                assert held < DMESG_LINES + 64
    finally:
        kernel.store.close()
    r = ktls("dmesg")
    lines = r.stdout.splitlines()
    assert len(lines) == DMESG_LINES
    assert lines[-1] == "line 5999" and lines[0] == f"line {6000 - DMESG_LINES}"
    for _ in range(3):  # the CLI's own lines go through the same ring
        assert ktls("kldunload", "ktls_ocf").exit == 1
    assert len(ktls("dmesg").stdout.splitlines()) == DMESG_LINES


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


@pytest.mark.parametrize(
    "options",
    [
        ["--trace"],
        ["--pcap", "{tmp}/capture.pcap"],
        ["--out", "-"],
        ["--stdin"],
        ["--format", "json"],
        ["--format", "yaml"],
        ["--libxo", "json,pretty"],
    ],
)
def test_send_memory_does_not_grow_with_the_data(
    options: list[str], ready: None, state: str, tmp_path: Path
) -> None:
    opts = [o.replace("{tmp}", str(tmp_path)) for o in options]
    glob = [o for o in opts if o in ("--format", "--libxo", "json", "yaml", "json,pretty")]
    rest = [o for o in opts if o not in glob]
    peaks = []
    for size in (SMALL, BIG):
        data = _sparse(tmp_path / f"data{size}", size)
        if "--stdin" in rest:
            peaks.append(_peak_kb(state, [*glob, "send", *CONN, *rest], stdin=data))
        else:
            peaks.append(_peak_kb(state, [*glob, "send", *CONN, "--file", str(data), *rest]))
    assert peaks[1] - peaks[0] < SLACK_KB, f"{options}: {peaks[0]} KiB -> {peaks[1]} KiB"


@pytest.mark.parametrize("fmt", [[], ["--format", "json"]])
def test_decode_memory_does_not_grow_with_the_data(
    fmt: list[str], ready: None, state: str, tmp_path: Path, ktls: Any
) -> None:
    peaks = []
    for size in (SMALL, BIG):
        stream = tmp_path / f"stream{size}"
        r = ktls("--format", "json", "send", *CONN, "--file", _sparse(tmp_path / "d", size),
                 "--out", stream)  # fmt: skip
        first = r.stdout.split('"first_seq":')[1].split(",")[0]
        peaks.append(_peak_kb(state, [*fmt, "decode", str(stream), *KEY, "--first-seq", first]))
    assert peaks[1] - peaks[0] < SLACK_KB, f"{fmt}: {peaks[0]} KiB -> {peaks[1]} KiB"


@pytest.mark.parametrize("fmt", [("json", False), ("json", True), ("yaml", False)])
def test_streamed_document_is_the_whole_document(fmt: tuple[str, bool]) -> None:
    """render.DocumentStream writes the bytes render.document writes for the whole list."""
    import io

    from ktls_cli.env import Env
    from ktls_cli.render import DocumentStream, document

    items: list[dict[str, Any]] = [
        {"seq": i, "type": 23, "length": 16384, "mode": "sw", "version": "0x0303", "ok": i != 1,
         "error": None if i != 1 else "Bad message (é)", "f": 1.5}
        for i in range(3)
    ] + [{}, {"nested": {"a": [1, 2]}}]  # fmt: skip
    for fields in ({"connection": "a 1 b 2", "error": {"errno": 5, "error": "x"}}, {}):
        for n in range(len(items) + 1):
            streamed, whole = io.StringIO(), io.StringIO()
            stream = DocumentStream(Env(format=fmt[0], pretty=fmt[1], stdout=streamed), "s", "r")
            for item in items[:n]:
                stream.item(item)
            stream.finish(fields)
            document(Env(format=fmt[0], pretty=fmt[1], stdout=whole), "s",
                     {"r": items[:n], **fields})  # fmt: skip
            assert streamed.getvalue() == whole.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sysctl", "-f", "/dev/zero"], "sysctl: /dev/zero: File too large\n"),
        (["state", "import", "/dev/zero"],
         "ktls: /dev/zero: not a ktls state export (binary data)\n"),
        (["decode", "--pcap", "/dev/zero", *KEY],
         "decode: /dev/zero: not a pcap file (bad magic number)\n"),
        (["connect", *CONN, "--keys-from", "/dev/zero"],
         "--keys-from /dev/zero: not a YAML file\n"),
    ],
)  # fmt: skip
def test_endless_inputs_end(argv: list[str], message: str, ktls: Any, init_state: Any,
                            state: str) -> None:  # fmt: skip
    """Files read whole (a sysctl.conf, an export, a capture, a key file) are read only
    as far as needed to refuse an endless one: no memory grows, the command ends."""
    init_state(state)
    r = ktls(*argv, env={"KTLS_DEBUG": None})
    assert r.exit in (1, 2) and r.stderr.endswith(message), r
