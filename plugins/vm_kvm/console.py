"""The tail of a VM's serial console log (the file named in its domain XML)."""

from __future__ import annotations

import os

CHUNK = 64 * 1024
MAX_BYTES = 1024 * 1024


def tail(path: str, lines: int) -> str | None:
    """The last ``lines`` lines of ``path`` (at most 1 MiB read); None if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            pos, data = end, b""
            while pos > 0 and data.count(b"\n") <= lines and end - pos < MAX_BYTES:
                step = min(CHUNK, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except OSError:
        return None
    text = data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
