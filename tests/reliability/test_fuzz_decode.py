"""Bad input for `ktls decode`: mutated and truncated record streams and pcap captures.

Streams of five suites (TLS 1.2 AES-GCM, TLS 1.3 AES-GCM, TLS 1.3 ChaCha20-Poly1305,
TLS 1.2 AES-CBC-SHA256, TLS 1.0 AES-CBC-SHA1) and their captures are made by `ktls
send --out --pcap`; hypothesis then flips bits, overwrites header fields (type,
version, length: 0, the limit, past it, 65535), cuts, inserts, duplicates and drops
bytes. Decoding runs in this process with the keys given as options. Every run:

- exits 0 (all records authentic) or 1, never with a traceback or internal error;
- on stdout lists one line per record, each either opened or `record I: seq S,
  offset O: <strerror> (<why>)`, then the summary; the bad ones are counted right;
- every record that lies wholly before the first changed byte still opens, at its
  own sequence number and offset (a damaged record never takes good ones with it);
- exit 1 comes with exactly one line on stderr naming the file and the first bad
  record (or, for a capture that cannot be read, what is wrong with it); a capture
  cut short in its last frame adds one line saying so, after the report;
- `--format json` gives one document whose bad records carry errno and reason.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("KTLS_FUZZ_EXAMPLES", "300"))
DERANDOMIZE = os.environ.get("KTLS_FUZZ_RANDOM") != "1"

SUITES = {
    "gcm12": ["--tls-version", "1.2", "--cipher", "aes-gcm", "--key", "11" * 16, "--iv",
              "a0a1a2a3"],
    "gcm13": ["--tls-version", "1.3", "--cipher", "aes-gcm", "--key", "22" * 16, "--iv",
              "b0" * 12],
    "chacha13": ["--tls-version", "1.3", "--cipher", "chacha20-poly1305", "--key", "33" * 32,
                 "--iv", "c0" * 12],
    "cbc12": ["--tls-version", "1.2", "--cipher", "aes-cbc", "--key", "44" * 16, "--auth",
              "hmac-sha256", "--auth-key", "55" * 32],
    "cbc10": ["--tls-version", "1.0", "--cipher", "aes-cbc", "--key", "66" * 16, "--iv",
              "77" * 16, "--auth", "hmac-sha1", "--auth-key", "88" * 20],
}  # fmt: skip
GOOD = re.compile(r"record (\d+): seq (\d+), type \d+ \(\w+\), length \d+, wire (\d+)")
BAD = re.compile(r"record (\d+): seq (\d+), offset (\d+): ([A-Z][\w ']+) \((.+)\)")
SUMMARY = re.compile(r"(\d+) records?, (\d+) bytes, (all authentic|(\d+) bad)")
CUT = re.compile(
    r"capture cut short in the middle of frame \d+ \((a 16-byte record header, only \d+ bytes"
    r"|\d+ captured bytes announced, only \d+) in the file\)"
)
STDERR = re.compile(
    r"decode: (.+): (\d+) bad records?, the first is record (\d+) \(seq (\d+), offset (\d+)\):"
    r" [A-Z][\w ']+\n"
)


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """suite -> (byte stream, pcap) of 5 records of various lengths."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import _run_ktls

    root = tmp_path_factory.mktemp("decode-fuzz")
    state = str(root / "kernel.db")
    assert _run_ktls("state", "init", "--profile", "current", state=state).exit == 0
    assert _run_ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.tls.cbc_enable=1",
                     state=state).exit == 0  # fmt: skip
    out: dict[str, tuple[bytes, bytes]] = {}
    for port, (name, opts) in enumerate(SUITES.items(), start=1000):
        conn = ["192.0.2.10:443", f"198.51.100.7:{port}"]
        assert _run_ktls("connect", *conn, *opts, state=state).exit == 0
        stream, pcap = root / f"{name}.tls", root / f"{name}.pcap"
        data = os.urandom(3 * 16384 + 1000)
        (root / "data").write_bytes(data)
        r = _run_ktls("send", *conn, "--file", root / "data", "--out", stream, "--pcap", pcap,
                      state=state)  # fmt: skip
        assert r.exit == 0, r
        r = _run_ktls("send", *conn, "--data", "tail", "--out", root / "tail", state=state)
        out[name] = (stream.read_bytes() + (root / "tail").read_bytes(), pcap.read_bytes())
    return out


def _record_ends(stream: bytes) -> list[tuple[int, int]]:
    """(offset, end) of each record as its header announces it."""
    spans, pos = [], 0
    while pos + 5 <= len(stream):
        end = pos + 5 + int.from_bytes(stream[pos + 3 : pos + 5], "big")
        spans.append((pos, end))
        pos = end
    return spans


@st.composite
def mutations(draw: Any, size: int) -> list[tuple[str, int, bytes]]:
    kinds = st.sampled_from(["flip", "byte", "cut", "insert", "delete", "length", "type",
                             "version", "dup"])  # fmt: skip
    return draw(
        st.lists(
            st.tuples(kinds, st.integers(0, size + 8), st.binary(min_size=1, max_size=24)),
            min_size=1, max_size=3,
        )
    )  # fmt: skip


def _apply(data: bytes, edits: list[tuple[str, int, bytes]]) -> tuple[bytes, int]:
    """The mutated bytes and the first offset that may differ from the original."""
    out = bytearray(data)
    first = len(out)
    for kind, at, blob in edits:
        at = min(at, len(out))
        spans = _record_ends(bytes(out))
        header = max((s for s, _e in spans if s <= at), default=0)
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << (blob[0] % 8)
        elif kind == "byte" and at < len(out):
            out[at] = blob[0]
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = blob
        elif kind == "delete":
            del out[at : at + len(blob)]
        elif kind == "length" and header + 5 <= len(out):
            value = [0, 1, 16384, 16384 + 256, 16384 + 2048, 16384 + 2049, 65535][blob[0] % 7]
            out[header + 3 : header + 5] = value.to_bytes(2, "big")
            at = header
        elif kind == "type" and header < len(out):
            out[header] = blob[0]
            at = header
        elif kind == "version" and header + 3 <= len(out):
            out[header + 1 : header + 3] = blob[:2].ljust(2, b"\x03")
            at = header
        elif kind == "dup":
            spans = [s for s in spans if s[1] <= len(out)]
            if spans:
                s, e = spans[blob[0] % len(spans)]
                out[e:e] = out[s:e]
                at = e
        first = min(first, at)
    return bytes(out), first


def _check_report(result: Any, path: Path, original: bytes, mutated: bytes, first: int) -> None:
    assert result.exit in (0, 1), result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    lines = result.stdout.splitlines()
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, result
    bad = 0
    for line in lines[:-1]:
        good, badm = GOOD.fullmatch(line), BAD.fullmatch(line)
        assert good or badm, line
        bad += badm is not None
    assert int(summary.group(1)) == len(lines) - 1
    assert bad == (int(summary.group(4)) if summary.group(4) else 0)
    assert result.exit == (1 if bad else 0), result
    if bad:
        m = STDERR.fullmatch(result.stderr)
        assert m and m.group(1) == str(path) and int(m.group(2)) == bad, result
    else:
        assert result.stderr == ""
    # Records wholly before the first change open, with their own numbers.
    for index, (_start, end) in enumerate(_record_ends(original)):
        if end > first or index >= len(lines) - 1:
            break
        good = GOOD.fullmatch(lines[index])
        assert good and int(good.group(1)) == int(good.group(2)) == index, (index, result)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_mutated_streams_are_reported_record_by_record(
    suite: str, streams: dict[str, tuple[bytes, bytes]], run_ktls: Any, tmp_path: Path
) -> None:
    original = streams[suite][0]
    path = tmp_path / "stream.tls"
    path.write_bytes(original)
    clean = run_ktls("decode", path, *SUITES[suite], state=tmp_path / "k.db")
    assert clean.exit == 0 and clean.stdout.endswith(", all authentic\n"), clean

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(edits=mutations(len(original)), machine=st.booleans())
    def one(edits: list[tuple[str, int, bytes]], machine: bool) -> None:
        mutated, first = _apply(original, edits)
        path.write_bytes(mutated)
        if machine:
            r = run_ktls("--format", "json", "decode", path, *SUITES[suite],
                         state=tmp_path / "k.db", env={"KTLS_DEBUG": None})  # fmt: skip
            assert r.exit in (0, 1) and "internal error" not in r.stderr, r
            doc = json.loads(r.stdout)["decode"]
            bad = [x for x in doc["records"] if not x["ok"]]
            assert doc["bad_records"] == len(bad) and r.exit == (1 if bad else 0)
            assert all(x["errno"] in (40, 89) and x["error"] for x in bad)
            return
        r = run_ktls("decode", path, *SUITES[suite], state=tmp_path / "k.db",
                     env={"KTLS_DEBUG": None})  # fmt: skip
        _check_report(r, path, original, mutated, first)

    one()


@pytest.mark.parametrize("suite", ["gcm12", "chacha13"])
def test_mutated_captures_are_reported_cleanly(
    suite: str, streams: dict[str, tuple[bytes, bytes]], run_ktls: Any, tmp_path: Path
) -> None:
    original = streams[suite][1]
    path = tmp_path / "capture.pcap"
    path.write_bytes(original)
    clean = run_ktls("decode", "--pcap", path, *SUITES[suite], state=tmp_path / "k.db")
    assert clean.exit == 0 and clean.stdout.endswith(", all authentic\n"), clean

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(edits=mutations(len(original)))
    def one(edits: list[tuple[str, int, bytes]]) -> None:
        # The capture's own structure: pcap header (24), record headers, frames.
        mutated, _first = _apply(original, [(k if k in ("flip", "byte", "cut", "insert",
                                             "delete") else "flip", a, b) for k, a, b in edits])
        path.write_bytes(mutated)
        r = run_ktls("decode", "--pcap", path, *SUITES[suite], state=tmp_path / "k.db",
                     env={"KTLS_DEBUG": None})  # fmt: skip
        assert r.exit in (0, 1), r
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r
        if r.exit == 0:
            assert r.stderr == "" and r.stdout.endswith(", all authentic\n")
            return
        lines = r.stderr.splitlines()
        assert r.stderr.endswith("\n") and all(x.startswith(f"decode: {path}: ") for x in lines)
        if r.stdout:  # the capture was read: the records are reported one by one
            assert SUMMARY.fullmatch(r.stdout.splitlines()[-1]), r
            cut = CUT.fullmatch(lines[-1][len(f"decode: {path}: ") :])
            # The bad-record line, the cut line or both: nothing else.
            assert len(lines) == (1 if not cut or "all authentic" in r.stdout else 2), r
            assert len(lines) == 1 or STDERR.fullmatch(lines[0] + "\n"), r
        else:
            assert len(lines) == 1, r

    one()


def test_truncation_at_every_boundary(
    streams: dict[str, tuple[bytes, bytes]], run_ktls: Any, tmp_path: Path
) -> None:
    """A stream cut in a header, in a body, or right after a record: only the cut
    record is reported (EMSGSIZE, truncated), everything before it opens."""
    original = streams["gcm12"][0]
    path = tmp_path / "cut.tls"
    spans = _record_ends(original)
    for start, end in spans:
        for cut in (start + 1, start + 4, start + 5, start + 13, end - 1, end):
            path.write_bytes(original[:cut])
            r = run_ktls("decode", path, *SUITES["gcm12"], state=tmp_path / "k.db")
            _check_report(r, path, original, original[:cut], cut)
            lines = r.stdout.splitlines()
            if cut == end:
                assert r.exit == 0
            else:
                assert r.exit == 1 and "Message too long (truncated record" in lines[-2], r


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_a_capture_cut_anywhere_reports_the_stream_its_complete_frames_carry(
    suite: str, streams: dict[str, tuple[bytes, bytes]], run_ktls: Any, tmp_path: Path
) -> None:
    """A capture cut at any offset past its file header reports exactly what the byte
    stream of its complete frames reports, then the cut, if it fell inside a frame."""
    stream, capture = streams[suite]
    ends, carried, pos = [], [0], 24  # frame ends, and the stream bytes up to each
    while pos < len(capture):
        caplen = int.from_bytes(capture[pos + 8 : pos + 12], "little")
        pos += 16 + caplen
        ends.append(pos)
        carried.append(carried[-1] + caplen - 54)  # Ethernet, IPv4, TCP: no options
    cuts = sorted({min(e + d, ends[-1]) for e in ends for d in (0, 1, 15, 16, 17, 700)})
    pcap_path, tls_path = tmp_path / "cut.pcap", tmp_path / "cut.tls"
    for i, cut in enumerate(cuts):
        whole = sum(1 for e in ends if e <= cut)
        pcap_path.write_bytes(capture[:cut])
        tls_path.write_bytes(stream[: carried[whole]])
        fmt = ["--format", "json"] if i % 5 == 4 else []
        p = run_ktls(*fmt, "decode", "--pcap", pcap_path, *SUITES[suite], state=tmp_path / "k.db")
        s = run_ktls(*fmt, "decode", tls_path, *SUITES[suite], state=tmp_path / "k.db")
        err = s.stderr.replace(str(tls_path), str(pcap_path))
        if cut in ends:
            assert (p.exit, p.stdout, p.stderr) == (s.exit, s.stdout, err), cut
            continue
        assert p.exit == 1 and p.stderr.startswith(err), (cut, p)
        line = p.stderr[len(err) :]
        assert line.startswith(f"decode: {pcap_path}: ") and line.count("\n") == 1, (cut, p)
        assert CUT.fullmatch(line[len(f"decode: {pcap_path}: ") : -1]), (cut, p)
        assert f"frame {whole + 1} (" in line
        if fmt:
            doc = json.loads(p.stdout)["decode"]
            assert doc.pop("capture_cut")["frame"] == whole + 1
            assert doc == json.loads(s.stdout)["decode"], cut
        else:
            assert p.stdout == s.stdout, cut
    # Cut in the first frame: nothing of the stream, the cut is the one error.
    pcap_path.write_bytes(capture[:100])
    p = run_ktls("decode", "--pcap", pcap_path, *SUITES[suite], state=tmp_path / "k.db")
    assert (p.exit, p.stdout) == (1, "") and CUT.fullmatch(p.stderr.split(": ", 2)[2][:-1]), p
