"""Reading produced media back, the way a user's player would look at it."""

from __future__ import annotations

import struct


def mp4_boxes(data: bytes) -> list[str]:
    """Top-level box types of an MP4, in order; ValueError when the structure is broken."""
    kinds, pos = [], 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated box header")
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8 or pos + size > len(data):
            raise ValueError(f"bad box size {size} at {pos}")
        kinds.append(kind.decode("latin-1"))
        pos += size
    return kinds
