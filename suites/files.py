"""File helpers shared by the suites (import-light: standard library only).

  file_sha256(path)             hex sha256 of a file, read in chunks
  checked_bytes(payload, meta)  payload with a one-line header carrying its sha256 (and small metadata):
                                how checkpoints are written, so that a changed byte or a cut file is
                                detected when it is read back
  read_checked(path)            (payload, meta) of such a file; `CorruptFile` (a UserError naming the file
                                and what is wrong) otherwise
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from suites.errors import UserError

__all__ = ["file_sha256", "checked_bytes", "read_checked", "CorruptFile"]

CHECKED_MAGIC = b"b2fb-checked-v1 "


class CorruptFile(UserError):
    """A checked file whose bytes do not match its recorded sha256, or that is cut short or not one."""

    def __init__(self, path: Path | str, why: str):
        super().__init__(f"{path} is corrupt ({why})")
        self.path, self.why = Path(path), why


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (model weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checked_bytes(payload: bytes, meta: dict[str, Any] | None = None) -> bytes:
    """`b2fb-checked-v1 <sha256 of payload> <meta as one-line JSON>\\n` followed by the payload."""
    header = CHECKED_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b" " + \
        json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return header + payload


def read_checked(path: Path | str) -> tuple[bytes, dict[str, Any]]:
    """The payload and metadata of a file written with `checked_bytes`, verified against its sha256."""
    data = Path(path).read_bytes()
    if not data.startswith(CHECKED_MAGIC):
        raise CorruptFile(path, "no checksum header: cut short, overwritten, or written by older code")
    end = data.find(b"\n")
    if end < 0:
        raise CorruptFile(path, "cut short inside its header")
    try:
        digest, meta_text = data[len(CHECKED_MAGIC):end].decode().split(" ", 1)
        meta = json.loads(meta_text)
    except (UnicodeDecodeError, ValueError):
        raise CorruptFile(path, "malformed checksum header") from None
    payload = data[end + 1:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise CorruptFile(path, f"sha256 {actual[:12]}... of its {len(payload)} bytes differs from the "
                                f"recorded {digest[:12]}...: changed or cut short")
    return payload, meta
