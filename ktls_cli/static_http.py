"""The HTTP/1.1 of `ktls serve`: parse a request head, map it to a file, write a head.

Sans-IO and small on purpose: GET and HEAD of static files, no request bodies,
keep-alive as HTTP/1.1 defines it (RFC 9112 §9.3). Paths never leave the root:
`..`, encoded or not, and symbolic links pointing outside answer 404.
"""

from __future__ import annotations

import mimetypes
import os
import urllib.parse
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

MAX_HEAD = 64 * 1024  # a request head larger than this is refused (431)
SERVER = "ktls-serve"

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request we answer with `status` and then close the connection."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail or REASONS.get(status, ""))
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def parse_request(buf: bytearray) -> Request | None:
    """The next request head in `buf` (consumed), or None until it is complete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HttpError(431)
        return None
    if end > MAX_HEAD:
        raise HttpError(431)
    head = bytes(buf[:end]).decode("latin-1")
    del buf[: end + 4]
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header field")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    length = headers.get("content-length", "0").strip() or "0"
    if not length.isdigit():
        raise HttpError(400, "malformed Content-Length")
    if "transfer-encoding" in headers or int(length) > 0:
        raise HttpError(413, "request bodies are not accepted")
    return Request(method, target, version, headers)


def resolve(root: Path, target: str) -> Path | None:
    """The regular file `target` names under `root` (index.html for a directory), or None."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
    if not path.startswith("/") or "\x00" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    real_root = root.resolve()
    candidate = real_root.joinpath(*parts).resolve()
    if candidate != real_root and real_root not in candidate.parents:
        return None  # a symbolic link out of the root
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


def content_type(path: Path) -> str:
    kind, encoding = mimetypes.guess_type(path.name)
    if kind is None or encoding is not None:
        return "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") else kind


def response_head(status: int, headers: list[tuple[str, str]], *, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines.append(f"Date: {formatdate(usegmt=True)}")
    lines.append(f"Server: {SERVER}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(status: int, *, head_only: bool = False) -> tuple[bytes, bytes]:
    """(head, body) of a short text/plain error; the connection closes after it."""
    body = f"{status} {REASONS.get(status, '')}\n".encode()
    head = response_head(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        keep_alive=False,
    )
    return head, b"" if head_only else body


def file_size(path: Path) -> int:
    return os.stat(path).st_size
