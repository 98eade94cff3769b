"""Real media files made with the standard library alone: a PNG still and an MP4 video.

The fake provider and the local vendor servers hand these out so that every consumer (the
artifact store, a browser, ffprobe) sees the file types the vendors return, not placeholders.

* PNG: RGB, 8 bits, one IDAT compressed with zlib, CRCs from zlib.crc32.
* MP4: ISO BMFF (`ftyp`, `moov` before `mdat`) holding one H.264 Constrained Baseline track
  whose every frame is an IDR picture made of I_PCM macroblocks. I_PCM carries raw samples, so
  no transform or entropy coder is needed, and every H.264 decoder plays it.

A picture is a background with a vertical gradient and a disc; its colours come from the prompt
(a colour word such as "red" colours the disc, the prompt's hash chooses the rest), so equal
prompts give equal files.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

RGB = tuple[int, int, int]

COLOUR_WORDS: dict[str, RGB] = {
    "red": (220, 40, 30), "orange": (240, 140, 20), "yellow": (240, 210, 40), "green": (40, 170, 60),
    "blue": (40, 90, 220), "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (130, 80, 40),
    "black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128), "gray": (128, 128, 128),
    "gold": (212, 175, 55), "silver": (192, 192, 192), "cyan": (40, 200, 220),
}


@dataclass(frozen=True)
class Scene:
    """What a frame shows: gradient from `top` to `bottom`, a disc of colour `disc`."""

    top: RGB
    bottom: RGB
    disc: RGB

    @classmethod
    def from_prompt(cls, prompt: str, seed: int | None = None) -> Scene:
        """Colours from a digest of prompt and seed (one task, one picture); a colour word sets the disc."""
        digest = hashlib.sha256(f"{prompt}\x00{seed or 0}".encode()).digest()
        top = (digest[0] // 2 + 64, digest[1] // 2 + 64, digest[2] // 2 + 96)
        bottom = (digest[3] // 3, digest[4] // 3, digest[5] // 3)
        disc = (digest[6], digest[7], digest[8])
        for word in re.findall(r"[a-z]+", prompt.lower()):
            if word in COLOUR_WORDS:
                disc = COLOUR_WORDS[word]
                break
        return cls(top, bottom, disc)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    red, green, blue = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return red, green, blue


def _disc_span(y: float, cx: float, cy: float, r: float, width: int) -> tuple[int, int] | None:
    dy = y - cy
    if abs(dy) >= r:
        return None
    dx = math.sqrt(r * r - dy * dy)
    return max(0, round(cx - dx)), min(width, round(cx + dx))


def _rows(width: int, height: int, colour_at_row: Callable[[int], bytes], disc: bytes, cx: float, cy: float,
          r: float) -> Iterator[bytes]:
    """Rows of pixels as bytes; a pixel is len(disc) bytes. O(height) Python work."""
    for y in range(height):
        bg = colour_at_row(y)
        span = _disc_span(y + 0.5, cx, cy, r, width)
        if span is None or span[0] >= span[1]:
            yield bg * width
        else:
            x0, x1 = span
            yield bg * x0 + disc * (x1 - x0) + bg * (width - x1)


# --- PNG ------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, prompt: str, seed: int | None = None) -> bytes:
    """A width x height RGB PNG picturing `prompt`."""
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise ValueError(f"png size {width}x{height}: each side must be 1..8192")
    scene = Scene.from_prompt(prompt, seed)

    def row_colour(y: int) -> bytes:
        return bytes(_mix(scene.top, scene.bottom, y / max(1, height - 1)))

    r = min(width, height) * 0.3
    rows = _rows(width, height, row_colour, bytes(scene.disc), width / 2, height * 0.55, r)
    raw = b"".join(b"\x00" + row for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


# --- H.264 (I_PCM) ------------------------------------------------------------------------------

class _Bits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def u(self, nbits: int, value: int) -> None:
        for i in range(nbits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                self.acc = self.n = 0

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align(self) -> None:
        while self.n:
            self.u(1, 0)

    def trailing(self) -> None:
        self.u(1, 1)
        self.align()


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes: 00 00 0x (x <= 3) becomes 00 00 03 0x."""
    out = bytearray()
    start = 0
    zeros = 0
    for i, byte in enumerate(rbsp):
        if zeros >= 2 and byte <= 3:
            out += rbsp[start:i] + b"\x03"
            start = i
            zeros = 0
        zeros = zeros + 1 if byte == 0 else 0
    out += rbsp[start:]
    return bytes(out)


def _sps(mb_w: int, mb_h: int, crop_right: int, crop_bottom: int) -> bytes:
    b = _Bits()
    b.u(8, 66)        # profile_idc: Baseline
    b.u(8, 0xC0)      # constraint_set0 and set1: Constrained Baseline
    b.u(8, 30)        # level_idc 3.0
    b.ue(0)           # seq_parameter_set_id
    b.ue(0)           # log2_max_frame_num_minus4
    b.ue(2)           # pic_order_cnt_type: output order = decoding order
    b.ue(0)           # max_num_ref_frames: intra only
    b.u(1, 0)         # gaps_in_frame_num_value_allowed_flag
    b.ue(mb_w - 1)
    b.ue(mb_h - 1)
    b.u(1, 1)         # frame_mbs_only_flag
    b.u(1, 1)         # direct_8x8_inference_flag
    cropped = crop_right or crop_bottom
    b.u(1, 1 if cropped else 0)
    if cropped:       # offsets in units of 2 samples (4:2:0)
        b.ue(0)
        b.ue(crop_right // 2)
        b.ue(0)
        b.ue(crop_bottom // 2)
    b.u(1, 0)         # vui_parameters_present_flag
    b.trailing()
    return b"\x67" + _escape(bytes(b.out))


def _pps() -> bytes:
    b = _Bits()
    b.ue(0)           # pic_parameter_set_id
    b.ue(0)           # seq_parameter_set_id
    b.u(1, 0)         # entropy_coding_mode_flag: CAVLC
    b.u(1, 0)         # bottom_field_pic_order_in_frame_present_flag
    b.ue(0)           # num_slice_groups_minus1
    b.ue(0)
    b.ue(0)           # num_ref_idx_l0/l1_default_active_minus1
    b.u(1, 0)         # weighted_pred_flag
    b.u(2, 0)         # weighted_bipred_idc
    b.se(0)
    b.se(0)
    b.se(0)           # pic_init_qp/qs_minus26, chroma_qp_index_offset
    b.u(1, 1)         # deblocking_filter_control_present_flag
    b.u(1, 0)         # constrained_intra_pred_flag
    b.u(1, 0)         # redundant_pic_cnt_present_flag
    b.trailing()
    return b"\x68" + _escape(bytes(b.out))


_MB_I_PCM = 25


def _idr_slice(idr_pic_id: int, macroblocks: list[bytes]) -> bytes:
    b = _Bits()
    b.ue(0)           # first_mb_in_slice
    b.ue(7)           # slice_type: I, all slices of the picture
    b.ue(0)           # pic_parameter_set_id
    b.u(4, 0)         # frame_num
    b.ue(idr_pic_id)  # consecutive IDR pictures differ here
    b.u(1, 0)         # no_output_of_prior_pics_flag
    b.u(1, 0)         # long_term_reference_flag
    b.se(0)           # slice_qp_delta
    b.ue(1)           # disable_deblocking_filter_idc
    b.ue(_MB_I_PCM)
    b.align()         # pcm_alignment_zero_bits
    head = bytes(b.out)
    # After the first macroblock everything is byte aligned: mb_type ue(25) is 9 bits, and the
    # 7 alignment bits that follow make each macroblock start with the two bytes 0D 00.
    body = bytearray(head)
    body += macroblocks[0]
    for mb in macroblocks[1:]:
        body += b"\x0d\x00" + mb
    body += b"\x80"   # rbsp_slice_trailing_bits
    return b"\x65" + _escape(bytes(body))


def _yuv(rgb: RGB) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    cb = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    cr = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return (min(235, max(16, round(y))), min(240, max(16, round(cb))), min(240, max(16, round(cr))))


def _frame_macroblocks(scene: Scene, mb_w: int, mb_h: int, width: int, height: int, t: float) -> list[bytes]:
    """The picture at time t in [0, 1): the disc crosses from left to right."""
    pw, ph = mb_w * 16, mb_h * 16
    disc = _yuv(scene.disc)
    r = min(width, height) * 0.25
    cx = r + (width - 2 * r) * t
    cy = height * 0.5
    gradient = [_yuv(_mix(scene.top, scene.bottom, y / max(1, ph - 1))) for y in range(ph)]
    luma = list(_rows(pw, ph, lambda y: bytes([gradient[y][0]]), bytes([disc[0]]), cx, cy, r))

    def chroma_row(k: int) -> Callable[[int], bytes]:
        return lambda y: bytes([gradient[2 * y][k]])

    cb, cr = (list(_rows(pw // 2, ph // 2, chroma_row(k), bytes([disc[k]]), cx / 2, cy / 2, r / 2)) for k in (1, 2))
    mbs = []
    for my in range(mb_h):
        for mx in range(mb_w):
            parts = [luma[my * 16 + j][mx * 16:mx * 16 + 16] for j in range(16)]
            parts += [cb[my * 8 + j][mx * 8:mx * 8 + 8] for j in range(8)]
            parts += [cr[my * 8 + j][mx * 8:mx * 8 + 8] for j in range(8)]
            mbs.append(b"".join(parts))
    return mbs


# --- MP4 ------------------------------------------------------------------------------------

def _box(kind: bytes, *payload: bytes) -> bytes:
    data = b"".join(payload)
    return struct.pack(">I", 8 + len(data)) + kind + data


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _moov(width: int, height: int, sps: bytes, pps: bytes, sizes: list[int], fps: int, mdat_offset: int) -> bytes:
    timescale, delta = fps * 100, 100
    duration_ms = len(sizes) * 1000 // fps
    media_duration = len(sizes) * delta
    avcc = _box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
                b"\x01", struct.pack(">H", len(pps)), pps)
    name = b"gentask fake video"
    avc1 = _box(b"avc1", b"\x00" * 6, struct.pack(">HHH", 1, 0, 0), b"\x00" * 12,
                struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
                bytes([len(name)]) + name.ljust(31, b"\x00"), struct.pack(">Hh", 0x18, -1), avcc)
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full(b"stts", 0, 0, struct.pack(">III", 1, len(sizes), delta)),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        _full(b"stsz", 0, 0, struct.pack(">II", 0, len(sizes)), struct.pack(f">{len(sizes)}I", *sizes)),
        _full(b"stco", 0, 0, struct.pack(">II", 1, mdat_offset)),
    )
    minf = _box(b"minf", _full(b"vmhd", 0, 1, b"\x00" * 8),
                _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1))), stbl)
    mdia = _box(b"mdia",
                _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, media_duration, 0x55C4, 0)),
                _full(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00"), minf)
    tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, duration_ms), b"\x00" * 8,
                 struct.pack(">hhHH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", width << 16, height << 16))
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, duration_ms, 0x10000, 0x100),
                 b"\x00" * 10, _MATRIX, b"\x00" * 24, struct.pack(">I", 2))
    return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))


def video_dimensions(aspect_ratio: str, long_side: int = 128) -> tuple[int, int]:
    """Even width and height for an aspect ratio such as "16:9" (the long side fixed)."""
    a, b = (int(x) for x in aspect_ratio.split(":"))
    if a >= b:
        return long_side, max(16, round(long_side * b / a / 2) * 2)
    return max(16, round(long_side * a / b / 2) * 2), long_side


def mp4(prompt: str, *, aspect_ratio: str = "16:9", seconds: int = 2, fps: int = 8,
        seed: int | None = None, long_side: int = 128) -> bytes:
    """A playable H.264 MP4 of `seconds` seconds: a disc crossing a gradient coloured by the prompt."""
    if not 1 <= seconds <= 60:
        raise ValueError(f"mp4 seconds {seconds}: must be 1..60")
    width, height = video_dimensions(aspect_ratio, long_side)
    mb_w, mb_h = -(-width // 16), -(-height // 16)
    scene = Scene.from_prompt(prompt, seed)
    sps, pps = _sps(mb_w, mb_h, mb_w * 16 - width, mb_h * 16 - height), _pps()
    count = seconds * fps
    samples = []
    for i in range(count):
        nal = _idr_slice(i % 2, _frame_macroblocks(scene, mb_w, mb_h, width, height, i / count))
        samples.append(struct.pack(">I", len(nal)) + nal)
    sizes = [len(s) for s in samples]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    moov_len = len(_moov(width, height, sps, pps, sizes, fps, 0))
    moov = _moov(width, height, sps, pps, sizes, fps, len(ftyp) + moov_len + 8)
    return ftyp + moov + _box(b"mdat", *samples)

