"""`ktls decode --pcap` of a capture cut short, as a `ktls send --pcap` killed mid-write
leaves it: every complete frame is decoded and its whole records reported exactly as
for a good capture, a record cut with the last frame is reported as a plain stream's
truncated tail is, then one line on stderr says where the capture was cut; exit 1.
A capture cut exactly between frames is a good capture."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

CONN = ["192.0.2.10:443", "198.51.100.7:51514"]
KEY = ["--tls-version", "1.2", "--cipher", "aes-gcm", "--key", "00" * 16, "--iv", "01020304"]
MSS = 1460  # the seed profile's egress MTU 1500 minus IPv4 and TCP headers
GCM12 = 29  # TLS 1.2 AES-GCM record overhead: header, explicit nonce, tag


def _frames(capture: bytes) -> list[tuple[int, int, bytes]]:
    """(record header offset, end, TCP payload) of each complete frame; this test's
    own reading of what `ktls send --pcap` writes (Ethernet, IPv4, TCP, no options)."""
    out, pos = [], 24
    while pos + 16 <= len(capture):
        caplen = struct.unpack_from("<I", capture, pos + 8)[0]
        end = pos + 16 + caplen
        if end > len(capture):
            break
        frame = capture[pos + 16 : end]
        assert frame[12:14] == b"\x08\x00" and frame[14] == 0x45
        out.append((pos, end, frame[14 + 40 : 14 + struct.unpack_from("!H", frame, 16)[0]]))
        pos = end
    return out


def _records(stream: bytes) -> list[tuple[int, int]]:
    """(offset, end) of each whole record in the stream."""
    spans, pos = [], 0
    while pos + 5 <= len(stream):
        end = pos + 5 + int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if end > len(stream):
            break
        spans.append((pos, end))
        pos = end
    return spans


def _expected(capture: bytes, cut: int, path: Path) -> tuple[int, list[str], list[str], int]:
    """Exit status, stdout lines, stderr lines and plaintext length of decoding the
    capture cut at `cut`, worked out from the frames and records themselves."""
    frames = _frames(capture[:cut])
    stream = b"".join(p for _s, _e, p in frames)
    end = frames[-1][1] if frames else 24
    cut_line: list[str] = []
    if cut > end:
        left = cut - end
        what = (
            f"a 16-byte record header, only {left} bytes in the file"
            if left < 16
            else f"{struct.unpack_from('<I', capture, end + 8)[0]} captured bytes announced,"
            f" only {left - 16} in the file"
        )
        cut_line = [
            f"decode: {path}: capture cut short in the middle of frame {len(frames) + 1} ({what})"
        ]
        if not stream:  # nothing of the connection before the cut: the cut is the error
            return 1, [], cut_line, 0
    whole = _records(stream)
    out = [
        f"record {i}: seq {i}, type 23 (application_data), length {e - s - GCM12}, wire {e - s}"
        for i, (s, e) in enumerate(whole)
    ]
    err: list[str] = []
    tail = whole[-1][1] if whole else 0
    if tail < len(stream):  # a record cut with the capture: as in a plain stream
        n = len(whole)
        out.append(
            f"record {n}: seq {n}, offset {tail}: Message too long"
            f" (truncated record ({len(stream) - tail} bytes at end of stream))"
        )
        err.append(
            f"decode: {path}: 1 bad record, the first is record {n} (seq {n}, offset {tail}):"
            " Message too long"
        )
    plain = sum(e - s - GCM12 for s, e in whole)
    bad = len(out) - len(whole)
    verdict = f"{bad} bad" if bad else "all authentic"
    out.append(f"{len(out)} record{'' if len(out) == 1 else 's'}, {plain} bytes, {verdict}")
    return (1 if err or cut_line else 0), out, err + cut_line, plain


def _connect(ktls: Any) -> None:
    assert ktls("sysctl", "kern.ipc.tls.enable=1", "kern.ipc.mb_use_ext_pgs=1").exit == 0
    assert ktls("kldload", "ktls_ocf").exit == 0
    assert ktls("connect", *CONN, *KEY).exit == 0


@pytest.fixture
def sent(ktls: Any, tmp_path: Path) -> dict[str, Path]:
    """40000 bytes (three records, 28 frames) sent as a stream and as a capture."""
    _connect(ktls)
    data = tmp_path / "data"
    data.write_bytes(os.urandom(40000))
    files = {"data": data, "out": tmp_path / "s.tls", "pcap": tmp_path / "s.pcap"}
    assert ktls("send", *CONN, "--file", data, "--out", files["out"],
                "--pcap", files["pcap"]).exit == 0  # fmt: skip
    return files


def _offsets(capture: bytes) -> list[int]:
    """Cuts in the file header, in every frame's record header and data, and exactly
    between frames."""
    cuts = {0, 1, 3, 4, 10, 23, 24}
    for i, (start, end, _p) in enumerate(_frames(capture)):
        cuts |= {start + 1, start + 11, start + 15, start + 16, start + 17, end - 1, end}
        if i % 4 == 0:
            cuts |= {start + 8, start + 12, start + 16 + 54, (start + end) // 2}
    return sorted(cuts)


def test_a_capture_cut_anywhere(ktls: Any, sent: dict[str, Path], tmp_path: Path) -> None:
    capture, data = sent["pcap"].read_bytes(), sent["data"].read_bytes()
    path, plain = tmp_path / "cut.pcap", tmp_path / "plain"
    header_cuts = {
        0: "not a pcap file (empty)",
        24: "no TCP payload from the connection in the capture",  # a good, empty capture
    }
    for cut in _offsets(capture):
        path.write_bytes(capture[:cut])
        plain.unlink(missing_ok=True)
        r = ktls("decode", "--pcap", path, *KEY, "--plaintext", plain)
        if cut in header_cuts or cut < 24:
            why = header_cuts.get(cut, f"capture cut short in its file header ({cut} of 24 bytes)")
            assert (r.exit, r.stdout, r.stderr) == (1, "", f"decode: {path}: {why}\n"), cut
            continue
        status, out, err, nplain = _expected(capture, cut, path)
        assert (r.exit, r.stdout.splitlines(), r.stderr.splitlines()) == (status, out, err), cut
        if out:
            assert plain.read_bytes() == data[:nplain], cut
    # The last cut is the whole file: a good capture.
    assert (r.exit, r.stderr, r.stdout.splitlines()[-1]) == (
        0, "", "3 records, 40000 bytes, all authentic"
    )  # fmt: skip


def test_the_records_are_those_of_the_stream_the_complete_frames_carry(
    ktls: Any, sent: dict[str, Path], tmp_path: Path
) -> None:
    """Side by side with `ktls decode` of the stream cut where the complete frames end:
    the same report (text and JSON), plus the cut."""
    capture, stream = sent["pcap"].read_bytes(), sent["out"].read_bytes()
    frames = _frames(capture)
    cut_pcap, cut_tls = tmp_path / "cut.pcap", tmp_path / "cut.tls"
    for i in (1, 11, 12, 22, 27):  # frame 12 ends record 0's bytes only in frame 13
        start, end, _p = frames[i]
        carried = sum(len(p) for _s, _e, p in frames[:i])
        cut_tls.write_bytes(stream[:carried])
        cut_pcap.write_bytes(capture[: (start + end) // 2])
        for fmt in ([], ["--format", "json"]):
            s = ktls(*fmt, "decode", cut_tls, *CONN)
            p = ktls(*fmt, "decode", "--pcap", cut_pcap, *CONN)
            line = (
                f"decode: {cut_pcap}: capture cut short in the middle of frame {i + 1}"
                f" ({end - start - 16} captured bytes announced,"
                f" only {(end - start) // 2 - 16} in the file)\n"
            )
            assert p.exit == 1 and p.stderr == s.stderr.replace(str(cut_tls), str(cut_pcap)) + line
            if not fmt:
                assert p.stdout == s.stdout
                continue
            doc, sdoc = json.loads(p.stdout)["decode"], json.loads(s.stdout)["decode"]
            assert doc.pop("capture_cut") == {
                "frame": i + 1, "offset": start, "wanted": end - start - 16,
                "present": (end - start) // 2 - 16, "in_header": False, "error": line[len(
                    f"decode: {cut_pcap}: "):-1],
            }  # fmt: skip
            assert doc == sdoc
    # A good capture's document has no capture_cut.
    good = ktls("--format", "json", "decode", "--pcap", sent["pcap"], *CONN)
    assert good.exit == 0 and "capture_cut" not in json.loads(good.stdout)["decode"]


def test_every_record_whole_before_the_cut_still_fails_the_capture(
    ktls: Any, tmp_path: Path
) -> None:
    """Records of exactly one MSS: frame and record boundaries meet, so a cut between
    frames leaves a good capture (exit 0), and a cut in the next frame leaves every
    record whole, yet the capture is damaged: exit 1 with the cut as the only line."""
    _connect(ktls)
    block = tmp_path / "block"
    block.write_bytes(os.urandom(MSS - GCM12))
    capture_path = tmp_path / "r.pcap"
    assert ktls("send", *CONN, "--file", block, "--repeat", 4, "--pcap", capture_path).exit == 0
    capture = capture_path.read_bytes()
    frames = _frames(capture)
    assert [len(p) for _s, _e, p in frames] == [MSS] * 4
    path, plain = tmp_path / "cut.pcap", tmp_path / "plain"
    for n, (start, end, _p) in enumerate(frames):
        for cut, status in ((start, 0), (start + 5, 1), (start + 16 + 100, 1), (end, 0)):
            path.write_bytes(capture[:cut])
            r = ktls("decode", "--pcap", path, *KEY, "--plaintext", plain)
            records = n + (cut == end)
            if not records:
                continue  # no payload at all: covered above
            assert r.exit == status, (cut, r)
            assert r.stdout.splitlines()[-1] == (
                f"{records} record{'s' if records > 1 else ''}, {records * (MSS - GCM12)} bytes,"
                " all authentic"
            )
            assert plain.read_bytes() == block.read_bytes() * records
            if status:
                assert r.stderr.count("\n") == 1
                assert r.stderr.startswith(
                    f"decode: {path}: capture cut short in the middle of frame {n + 1} ("
                )
            else:
                assert r.stderr == ""


def test_a_bogus_frame_length_in_the_middle_is_still_an_error(
    ktls: Any, sent: dict[str, Path], tmp_path: Path
) -> None:
    capture = bytearray(sent["pcap"].read_bytes())
    start = _frames(bytes(capture))[4][0]
    capture[start + 8 : start + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    path = tmp_path / "bogus.pcap"
    path.write_bytes(bytes(capture))
    r = ktls("decode", "--pcap", path, *CONN)
    assert (r.exit, r.stdout, r.stderr) == (
        1, "", f"decode: {path}: frame 5: bogus captured length 2147483647 (over 262144)\n"
    )  # fmt: skip


def test_a_send_killed_mid_capture(ktls: Any, state: str, tmp_path: Path) -> None:
    """SIGKILL a `ktls send --pcap` mid-write: the capture it leaves decodes up to the
    frame being written, whose cut is reported. The kill mostly lands between two
    buffered frame writes; a few tries (a fresh connection each) often catch one
    inside a frame."""
    _connect(ktls)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(16 << 20))
    capture_path, plain = tmp_path / "killed.pcap", tmp_path / "plain"
    for port in range(51600, 51604):
        conn = [CONN[0], f"198.51.100.7:{port}"]
        assert ktls("connect", *conn, *KEY).exit == 0
        capture_path.unlink(missing_ok=True)  # the wait below is for this send's file
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktls_cli.main", "--state", state, "send", *conn, "--file",
             str(big), "--pcap", str(capture_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if capture_path.exists() and capture_path.stat().st_size > (256 << 10):
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        capture = capture_path.read_bytes()
        assert 256 << 10 < len(capture) < 16 << 20  # killed in the middle
        r = ktls("decode", "--pcap", capture_path, *conn, "--plaintext", plain)
        status, out, err, nplain = _expected(capture, len(capture), capture_path)
        assert (r.exit, r.stdout.splitlines(), r.stderr.splitlines()) == (status, out, err)
        assert len(out) >= 2 and plain.read_bytes() == big.read_bytes()[:nplain]
        if "capture cut short" in r.stderr:
            break
