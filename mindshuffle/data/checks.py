"""Reading: cheap checks that keep broken files away from MindSpore's decoders.

MindSpore 2.7.1's C++ decoders do not survive every broken file (measured): a JPEG cut off inside its header
stops the process with SIGFPE, and a JPEG with a bogus Huffman-table header can crash it with SIGSEGV; no
error mode of the pipeline catches that. So the reader walks each file's header segments (microseconds, no
pixel decoded) and refuses what the decoders would choke on. What still gets past (a PNG whose compressed
data is damaged, say) fails cleanly inside the pipeline and is named afterwards by ``source._Source``.
"""
from __future__ import annotations

import io


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_CHECKED_SEGMENTS = _SOF_MARKERS | {0xC4, 0xDA, 0xDB}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_tables_problem(marker: int, seg) -> str | None:
    """What is wrong with a quantisation (DB) or Huffman (C4) table segment with payload ``seg``, or None."""
    i = 0
    while i < len(seg):
        kind, table = seg[i] >> 4, seg[i] & 15
        if marker == 0xDB:
            if kind > 1 or table > 3:
                return "bad quantisation table"
            i += 1 + 64 * (kind + 1)
        else:
            symbols = sum(seg[i + 1:i + 17])
            if kind > 1 or table > 3 or i + 17 > len(seg) or symbols > 256:
                return "bad Huffman table"
            i += 17 + symbols
    return None if i == len(seg) else "bad table length"


def _jpeg_segment_problem(marker: int, seg) -> str | None:
    """What is wrong with one JPEG header segment (its payload ``seg``), or None."""
    if marker in (0xC4, 0xDB):
        return _jpeg_tables_problem(marker, seg)
    if marker in _SOF_MARKERS:
        if len(seg) < 6:
            return "bad frame header"
        height, width, comps = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
        if not height or not width or comps not in (1, 3, 4) or len(seg) != 6 + 3 * comps:
            return f"bad frame header ({width}x{height} px, {comps} components)"
    if marker == 0xDA and (not seg or not 1 <= seg[0] <= 4 or len(seg) != 4 + 2 * seg[0]):
        return "bad scan header"
    return None


def _jpeg_problem(raw) -> str | None:
    """Walks the segments from the start to the first scan, then looks for the end-of-image marker after it
    (compressed data cannot contain that marker, so one found there is the image's own, not a thumbnail's)."""
    n, pos, frame = len(raw), 2, False
    while pos + 4 <= n:
        if raw[pos] != 0xFF:
            return f"no JPEG marker at byte {pos}"
        marker = raw[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte; markers without a length
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD8, 0xD9):
            return "JPEG ends before its image data" if marker == 0xD9 else "bad JPEG marker"
        end = pos + 2 + int.from_bytes(raw[pos + 2:pos + 4], "big")
        if end > n or end < pos + 4:
            break
        if marker in _CHECKED_SEGMENTS:
            problem = _jpeg_segment_problem(marker, raw[pos + 4:end])
            if problem:
                return problem
        frame = frame or marker in _SOF_MARKERS
        if marker == 0xDA:
            if not frame:
                return "JPEG scan without a frame header"
            return None if raw.rfind(b"\xff\xd9", end) >= 0 else "truncated JPEG (no end-of-image marker)"
        pos = end
    return "truncated JPEG header"


def _png_problem(raw) -> str | None:
    """Checks the header and walks the chunk lengths up to IEND (the compressed data is not inflated)."""
    n = len(raw)
    if n < 33 or raw[12:16] != b"IHDR" or int.from_bytes(raw[8:12], "big") != 13:
        return "bad PNG header"
    if not int.from_bytes(raw[16:20], "big") or not int.from_bytes(raw[20:24], "big"):
        return "PNG of 0 pixels"
    pos = 8
    while pos + 8 <= n:
        length, kind = int.from_bytes(raw[pos:pos + 4], "big"), raw[pos + 4:pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return None if pos <= n else "truncated PNG"
    return "truncated PNG (no IEND chunk)"


def _image_problem(raw) -> str | None:
    """Why the whole file ``raw`` could not be decoded, judged from its signature and structure; None when it
    looks whole. Formats without a cheap structure check (TIFF, PPM/PGM) pass."""
    n = len(raw)
    if not n:
        return "empty file, 0 bytes"
    if raw[:3] == b"\xff\xd8\xff":
        return _jpeg_problem(raw)
    if raw[:8] == _PNG_SIGNATURE:
        return _png_problem(raw)
    if raw[:2] == b"BM":
        size, offset = int.from_bytes(raw[2:6], "little"), int.from_bytes(raw[10:14], "little")
        return "truncated BMP" if n < 26 or size > n or offset >= n else None
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return None if int.from_bytes(raw[4:8], "little") + 8 <= n else "truncated WebP"
    if raw[:4] in (b"II*\x00", b"MM\x00*") or raw[:2] in (b"P2", b"P3", b"P5", b"P6"):
        return None
    return "not a JPEG, PNG, BMP, WebP, TIFF or PPM/PGM image"


def _read(path: str):
    """(the file's bytes, None) or (None, why the file cannot be used)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        problem = _image_problem(raw)
        return (None, problem) if problem else (raw, None)
    except OSError as e:
        return None, f"{type(e).__name__}: {e.strerror or e}"


def _decode_problem(raw) -> str | None:
    """Decodes ``raw`` fully with PIL (only on the error path, to find which of a few files the pipeline's
    decoder refused; MindSpore's own eager decoder would leave an ./abnormal_image.jpg in the working folder)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
        return None
    except Exception as e:  # any decoder complaint
        return f"cannot be decoded: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
