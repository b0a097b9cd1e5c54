"""Whole JPEG frames out of a byte stream (ffmpeg's ``-f image2pipe -c:v mjpeg`` stdout).

A JPEG is ``SOI`` (``FF D8``), marker segments (``FF xx`` + a 16-bit big-endian length that
counts itself), and after each ``SOS`` segment entropy-coded data, up to ``EOI`` (``FF D9``).
Inside entropy-coded data a ``0xFF`` data byte is stuffed as ``FF 00`` and ``FF D0``..``FF D7``
are restart markers; any other marker ends the scan (``EOI``, or e.g. ``DHT``/``SOS`` between the
scans of a progressive image). Searching for ``FF D9`` is therefore wrong: an APP1/EXIF segment
can carry a whole thumbnail JPEG, EOI included. :class:`JpegSplitter` walks the segments by their
lengths and scans only entropy-coded data for markers.

Invariants of :class:`JpegSplitter`:

* Every frame it returns starts with ``SOI``, ends with ``EOI``, has a well-formed segment chain
  and at least one scan, and is at most ``max_frame_bytes`` long. It does not decode the image.
* The frames returned do not depend on how the stream is cut into chunks.
* Bytes outside a frame (garbage before ``SOI``) are skipped. A frame that turns out to be
  malformed, or that grows past ``max_frame_bytes`` without its ``EOI``, is dropped and the
  splitter resynchronises at the next ``SOI``; each dropped frame counts one in ``resyncs``.
  After broken headers the search resumes right after the dropped frame's ``SOI`` (a bad length
  may have swallowed the next frame); after an overlong scan it resumes where the scan stopped
  (the scan held no marker, so no ``SOI`` either).
* Whatever the input, after :meth:`~JpegSplitter.feed` returns it holds fewer than
  ``max_frame_bytes`` bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

__all__ = [
    "DEFAULT_READ_CHUNK_BYTES",
    "MAX_FRAME_BYTES",
    "JpegSplitter",
    "jpeg_dimensions",
    "read_frames",
]

# A 4K frame at high quality is 2-4 MiB; 16 MiB leaves room for EXIF and odd encoders, and bounds
# the memory one broken stream (an EOI that never comes) can hold.
MAX_FRAME_BYTES = 16 * 1024 * 1024
# StreamReader.read(n) returns what is buffered, up to n: a large n costs no latency and means
# fewer, bigger feeds (asyncio reads a pipe in pieces of up to 256 KiB).
DEFAULT_READ_CHUNK_BYTES = 256 * 1024

_SOI = 0xD8
_EOI = 0xD9
_SOS = 0xDA
_TEM = 0x01
_RST = range(0xD0, 0xD8)
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
# C4 (DHT), C8 (JPG, reserved) and CC (DAC) share the range but are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOI_BYTES = b"\xff\xd8"

# Parser states of JpegSplitter.
_SEEK_SOI = 0  # outside a frame, looking for SOI
_SEGMENTS = 1  # at a marker between segments
_SCAN = 2  # inside entropy-coded data


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the first start-of-frame segment of a JPEG.

    Walks the marker segments from ``SOI`` by their lengths (a thumbnail inside an APP segment is
    skipped, not read). Raises :class:`ValueError` when the data is not a JPEG, is cut short, or
    reaches its first scan without a start-of-frame segment.
    """
    size = len(data)
    if size < 2 or data[0] != 0xFF or data[1] != _SOI:
        raise ValueError("not a JPEG: it does not start with SOI (FF D8)")
    pos = 2
    while True:
        if pos + 1 >= size:
            raise ValueError(f"JPEG cut short at byte {pos}: no start-of-frame segment")
        if data[pos] != 0xFF:
            raise ValueError(f"malformed JPEG: expected a marker at byte {pos}")
        code = data[pos + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code == _TEM or code in _RST:
            pos += 2
            continue
        if code in (0x00, _SOI, _EOI, _SOS):
            raise ValueError(
                f"malformed JPEG: marker FF {code:02X} at byte {pos} before any start-of-frame"
            )
        if pos + 4 > size:
            raise ValueError(f"JPEG cut short in the segment at byte {pos}")
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > size:
            raise ValueError(f"malformed JPEG: bad length {length} of the segment at byte {pos}")
        if code in _SOF:
            # Payload: precision (1 byte), height (2), width (2), component count (1), ...
            if length < 8:
                raise ValueError(f"malformed JPEG: start-of-frame segment of length {length}")
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            if width == 0 or height == 0:
                raise ValueError(f"unsupported JPEG: size {width}x{height} in its start of frame")
            return width, height
        pos += 2 + length


class JpegSplitter:
    """Incremental splitter: :meth:`feed` chunks, get back the frames they complete.

    See the module docstring for the invariants. Not thread-safe; one per stream.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 4:
            raise ValueError(f"max_frame_bytes must be >= 4, got {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._state = _SEEK_SOI
        self._start = 0  # offset of the current frame's SOI in _buf (in a frame)
        self._pos = 0  # next offset to parse
        self._has_scan = False  # the current frame has reached an SOS
        self.frames_total = 0  # frames returned
        self.resyncs = 0  # started frames dropped (malformed or too large)
        self.skipped_bytes = 0  # bytes dropped: garbage outside frames and dropped frames

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a frame not complete yet (or a trailing ``FF`` that may start one)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames completed by them, in order."""
        buf = self._buf
        buf += chunk
        frames: list[bytes] = []
        while True:
            if self._state == _SEEK_SOI:
                if not self._seek_soi():
                    break
            elif self._state == _SEGMENTS:
                if not self._parse_segment(frames):
                    break
            elif not self._scan():
                break
        # Compact: keep only what the current frame (or a possible SOI) still needs.
        keep_from = self._start if self._state != _SEEK_SOI else self._pos
        if keep_from:
            del buf[:keep_from]
            self._pos -= keep_from
            self._start = 0
        self.frames_total += len(frames)
        return frames

    # Each step returns True when it made progress and False when it needs more bytes.

    def _seek_soi(self) -> bool:
        buf = self._buf
        found = buf.find(_SOI_BYTES, self._pos)
        if found < 0:
            # A trailing FF may be the first half of an SOI.
            end = len(buf) - 1 if buf.endswith(b"\xff") else len(buf)
            self.skipped_bytes += end - self._pos
            self._pos = end
            return False
        self.skipped_bytes += found - self._pos
        self._begin_frame(found)
        return True

    def _begin_frame(self, soi: int) -> None:
        self._state = _SEGMENTS
        self._start = soi
        self._pos = soi + 2
        self._has_scan = False

    def _drop_frame(self, resume_at: int) -> None:
        """Abandon the current frame; look for the next SOI from ``resume_at``."""
        self.resyncs += 1
        self.skipped_bytes += resume_at - self._start
        self._state = _SEEK_SOI
        self._start = self._pos = resume_at

    def _parse_segment(self, frames: list[bytes]) -> bool:
        buf = self._buf
        pos = self._pos
        limit = self._start + self._max_frame_bytes
        if pos + 2 > limit:  # even an EOI here would make the frame too large
            self._drop_frame(self._start + 2)
            return True
        if pos + 2 > len(buf):
            return False
        if buf[pos] != 0xFF:  # not a marker where one must be: a broken frame
            self._drop_frame(self._start + 2)
            return True
        code = buf[pos + 1]
        if code == 0xFF:  # fill byte
            self._pos = pos + 1
        elif code == _EOI:
            end = pos + 2
            if self._has_scan:
                frames.append(bytes(buf[self._start : end]))
                self._state = _SEEK_SOI
                self._start = self._pos = end
            else:  # SOI..EOI without an image in between
                self._drop_frame(end)
        elif code == _SOI:  # a new frame before this one ended: this one is broken
            self._drop_frame(pos)
            self._begin_frame(pos)
        elif code == _TEM or code in _RST:
            self._pos = pos + 2
        elif code == 0x00 or pos + 4 > limit:  # no marker; or no room for FF, code, length
            self._drop_frame(self._start + 2)
        else:
            if pos + 4 > len(buf):
                return False
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            end = pos + 2 + length
            if length < 2 or end > limit:
                self._drop_frame(self._start + 2)
            elif end > len(buf):
                return False  # wait for the whole segment; the bound above caps the wait
            else:
                self._pos = end
                if code == _SOS:
                    self._state = _SCAN
                    self._has_scan = True
        return True

    def _scan(self) -> bool:
        buf = self._buf
        limit = self._start + self._max_frame_bytes
        end = min(limit, len(buf))
        pos = self._pos
        find = buf.find
        # Entropy-coded data holds an FF about every 256 bytes, nearly all of them stuffing:
        # find() skips to each one at C speed, and only those are looked at here.
        while (ff := find(b"\xff", pos, end)) >= 0:
            if ff + 1 == end:  # the code after this FF is not here yet (or past the limit)
                pos = ff
                break
            code = buf[ff + 1]
            if code == 0x00 or code in _RST:
                pos = ff + 2
            elif code == 0xFF:  # fill byte before a marker
                pos = ff + 1
            else:  # a marker: EOI, or a segment between scans; parsed as a segment boundary
                self._state = _SEGMENTS
                self._pos = ff
                return True
        else:
            pos = max(pos, end)
        if len(buf) >= limit:
            self._drop_frame(limit - 1)  # the byte at limit - 1 may start the next SOI
            return True
        self._pos = pos
        return False


async def read_frames(
    reader: asyncio.StreamReader,
    *,
    chunk_size: int = DEFAULT_READ_CHUNK_BYTES,
    splitter: JpegSplitter | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield the whole JPEG frames read from ``reader`` until EOF.

    A partial frame at EOF is not yielded. Pass ``splitter`` to read its counters (``resyncs``,
    ``skipped_bytes``) afterwards. Close the generator (``contextlib.aclosing``) when leaving
    early.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    splitter = splitter if splitter is not None else JpegSplitter()
    while chunk := await reader.read(chunk_size):
        for frame in splitter.feed(chunk):
            yield frame
