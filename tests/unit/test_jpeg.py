"""JpegSplitter and jpeg_dimensions against real ffmpeg JPEGs and hand-built edge cases.

The reference frames are encoded once per session by ffmpeg into separate files (``-f image2``),
so the true frame boundaries come from ffmpeg, not from the code under test.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heldar.media.jpeg import JpegSplitter, jpeg_dimensions, read_frames
from heldar.media.process import FfmpegProcess
from tests.support.binaries import ffmpeg_cmd

ENCODE_TIMEOUT_S = 30.0  # generous: encoding a dozen small frames takes well under a second
CHUNKED = settings(max_examples=100, deadline=None)

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Samples:
    large: tuple[bytes, ...]  # 640x360
    small: tuple[bytes, ...]  # 160x90, for the many-chunk properties


async def _encode(out_dir: Path, size: str, count: int) -> tuple[bytes, ...]:
    pattern = out_dir / f"{size}_%03d.jpg"
    argv = [
        *ffmpeg_cmd(),
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=25",
        "-frames:v",
        str(count),
        "-c:v",
        "mjpeg",
        "-q:v",
        "5",
        "-f",
        "image2",
        str(pattern),
    ]
    async with await FfmpegProcess.start(argv, label=f"encode {size}", capture_stdout=False) as p:
        async with asyncio.timeout(ENCODE_TIMEOUT_S):
            code = await p.wait()
        assert code == 0, p.stderr_tail()
    files = sorted(out_dir.glob(f"{size}_*.jpg"))
    assert len(files) == count
    return tuple(path.read_bytes() for path in files)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    out_dir = tmp_path_factory.mktemp("jpeg")

    async def encode_all() -> Samples:
        return Samples(
            large=await _encode(out_dir, "640x360", 6), small=await _encode(out_dir, "160x90", 8)
        )

    return asyncio.run(encode_all())


def segment(code: int, payload: bytes) -> bytes:
    return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload


def with_segment_after_soi(frame: bytes, extra: bytes) -> bytes:
    assert frame.startswith(SOI)
    return SOI + extra + frame[2:]


def cut(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` in chunks of the given sizes, cycled."""
    pos = 0
    index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        index += 1


def split(data: bytes, sizes: Sequence[int] = (1 << 30,), **kwargs: int) -> list[bytes]:
    splitter = JpegSplitter(**kwargs)
    frames: list[bytes] = []
    for chunk in cut(data, sizes):
        frames += splitter.feed(chunk)
    return frames


chunk_sizes = st.lists(
    st.one_of(st.integers(1, 8), st.integers(1, 4096), st.integers(1, 70_000)),
    min_size=1,
    max_size=20,
)
garbage = st.binary(max_size=300).map(lambda data: data.replace(b"\xff", b"\x00"))


def test_reference_frames_are_what_the_tests_assume(samples: Samples) -> None:
    for frame in samples.large + samples.small:
        assert frame.startswith(SOI)
        assert frame.endswith(EOI)


def test_an_ffmpeg_stream_splits_into_exactly_its_frames(samples: Samples) -> None:
    splitter = JpegSplitter()
    assert splitter.feed(b"".join(samples.large)) == list(samples.large)
    assert (splitter.frames_total, splitter.resyncs, splitter.skipped_bytes) == (6, 0, 0)
    assert splitter.buffered_bytes == 0


@CHUNKED
@given(sizes=chunk_sizes)
def test_any_chunking_yields_the_same_frames(samples: Samples, sizes: list[int]) -> None:
    assert split(b"".join(samples.small), sizes) == list(samples.small)


@CHUNKED
@given(sizes=chunk_sizes, junk=st.lists(garbage, min_size=9, max_size=9))
def test_garbage_around_frames_is_skipped(
    samples: Samples, sizes: list[int], junk: list[bytes]
) -> None:
    stream = b"".join(j + frame for j, frame in zip(junk, samples.small, strict=False)) + junk[-1]
    splitter = JpegSplitter()
    frames = [frame for chunk in cut(stream, sizes) for frame in splitter.feed(chunk)]
    assert frames == list(samples.small)
    assert splitter.resyncs == 0
    assert splitter.skipped_bytes + splitter.buffered_bytes == sum(map(len, junk))


def test_eoi_inside_an_exif_thumbnail_does_not_end_the_frame(samples: Samples) -> None:
    thumbnail = samples.small[0]  # a whole JPEG, EOI included, as EXIF carries one
    exif = segment(0xE1, b"Exif\x00\x00" + b"MM\x00\x2a" + thumbnail)
    comment = segment(0xFE, b"a comment with \xff\xd9 and \xff\xd8 in it")
    frame = with_segment_after_soi(samples.large[0], exif + comment)
    assert frame.count(EOI) >= 3  # a naive search for EOI would cut it twice
    assert split(frame + samples.large[1]) == [frame, samples.large[1]]
    assert split(frame, [3]) == [frame]
    assert jpeg_dimensions(frame) == (640, 360)  # the thumbnail's SOF is not read


def test_a_multi_scan_frame_with_stuffing_restarts_and_fill_bytes_is_one_frame() -> None:
    # Structure of a progressive JPEG: DHT and SOS between scans; synthetic entropy-coded data.
    sof2 = segment(0xC2, bytes([8, 0, 90, 0, 160, 1, 1, 0x11, 0]))
    scan = segment(0xDA, bytes([1, 1, 0, 0, 63, 0]))
    data1 = b"\x12\xff\x00\x34\xff\xd0\x56\xff\xff\x00\x78\xff\xd7"  # stuffing, RST0, RST7
    data2 = b"\xff\x00" * 5 + b"\x9a"
    frame = (
        SOI
        + segment(0xDB, bytes(65))
        + b"\xff\xff"  # fill bytes before a marker
        + sof2
        + segment(0xC4, bytes(20))
        + scan
        + data1
        + segment(0xC4, bytes(20))
        + scan
        + data2
        + b"\xff\xff"
        + EOI
    )
    for sizes in ([1 << 20], [1], [2], [5, 1, 3]):
        splitter = JpegSplitter()
        frames = [f for chunk in cut(frame * 2, sizes) for f in splitter.feed(chunk)]
        assert frames == [frame, frame]
        assert splitter.resyncs == 0
    assert jpeg_dimensions(frame) == (160, 90)


def test_a_cut_off_frame_is_dropped_and_the_next_one_kept(samples: Samples) -> None:
    first, second = samples.small[:2]
    splitter = JpegSplitter()
    # A frame cut short inside its scan; the SOI of the next is a marker the scan cannot hold.
    frames = splitter.feed(first[: len(first) // 2] + second)
    assert frames == [second]
    assert splitter.resyncs == 1
    assert splitter.skipped_bytes == len(first) // 2


def test_a_frame_cut_inside_its_headers_is_dropped(samples: Samples) -> None:
    first, second = samples.small[:2]
    splitter = JpegSplitter()
    assert splitter.feed(first[:7] + b"\x00garbage" + second) == [second]
    assert splitter.resyncs == 1


def test_soi_then_eoi_without_a_scan_is_no_frame(samples: Samples) -> None:
    splitter = JpegSplitter()
    assert splitter.feed(SOI + segment(0xFE, b"x") + EOI + samples.small[0]) == [samples.small[0]]
    assert splitter.resyncs == 1


def test_a_frame_over_the_size_limit_is_dropped_and_the_stream_resyncs(samples: Samples) -> None:
    small, large = samples.small[0], samples.large[0]
    limit = len(small) + 100
    assert len(large) > limit
    for sizes in ([1 << 20], [333]):
        splitter = JpegSplitter(max_frame_bytes=limit)
        frames = [f for chunk in cut(small + large + small, sizes) for f in splitter.feed(chunk)]
        assert frames == [small, small]
        assert splitter.resyncs == 1


def test_a_frame_of_exactly_the_limit_is_kept(samples: Samples) -> None:
    frame = samples.small[0]
    assert split(frame, max_frame_bytes=len(frame)) == [frame]
    assert split(frame, max_frame_bytes=len(frame) - 1) == []


def test_an_endless_scan_is_bounded() -> None:
    splitter = JpegSplitter(max_frame_bytes=10_000)
    assert splitter.feed(SOI + segment(0xDA, bytes(6))) == []
    for _ in range(100):
        assert splitter.feed(b"\x01" * 3000) == []
        assert splitter.buffered_bytes < 10_000
    assert splitter.resyncs == 1


stuffed = st.binary(max_size=40).map(lambda data: data.replace(b"\xff", b"\xff\x00"))
segments = st.builds(
    segment, st.sampled_from([0xC0, 0xC4, 0xDB, 0xDD, 0xE0, 0xE1, 0xFE]), st.binary(max_size=30)
)
scans = st.builds(
    lambda header, data, restart: header + data + restart,
    st.builds(segment, st.just(0xDA), st.binary(min_size=6, max_size=6)),
    stuffed,
    st.sampled_from([b"", b"\xff\xd3", b"\xff\xff"]),
)
well_formed = st.builds(
    lambda head, body: SOI + b"".join(head) + b"".join(body) + EOI,
    st.lists(segments, max_size=4),
    st.lists(scans, min_size=1, max_size=3),
)
# Frames, frames cut anywhere, and loose pieces that look like the start of something.
pieces = st.one_of(
    well_formed,
    st.builds(lambda frame, at: frame[: at % (len(frame) + 1)], well_formed, st.integers(0)),
    st.binary(max_size=40),
    segments,
    stuffed,
    st.sampled_from([SOI, EOI, b"\xff", b"\xff\x00", b"\xff\xda\x00\x02", b"\xff\xd0"]),
)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(pieces, max_size=30),
    sizes=chunk_sizes,
    max_frame_bytes=st.integers(4, 400),
)
def test_arbitrary_bytes_never_break_the_invariants(
    parts: list[bytes], sizes: list[int], max_frame_bytes: int
) -> None:
    data = b"".join(parts)
    whole = JpegSplitter(max_frame_bytes)
    expected = whole.feed(data)
    chunked = JpegSplitter(max_frame_bytes)
    frames = []
    for chunk in cut(data, sizes):
        frames += chunked.feed(chunk)
        assert chunked.buffered_bytes < max_frame_bytes
    assert frames == expected
    assert (chunked.resyncs, chunked.skipped_bytes) == (whole.resyncs, whole.skipped_bytes)
    for frame in frames:
        assert frame.startswith(SOI)
        assert frame.endswith(EOI)
        assert b"\xff\xda" in frame
        assert len(frame) <= max_frame_bytes


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(well_formed, max_size=10), sizes=chunk_sizes)
def test_well_formed_frames_come_out_exactly(frames: list[bytes], sizes: list[int]) -> None:
    assert split(b"".join(frames), sizes) == frames


def test_dimensions_of_an_ffmpeg_frame(samples: Samples) -> None:
    assert jpeg_dimensions(samples.large[0]) == (640, 360)
    assert jpeg_dimensions(samples.small[0]) == (160, 90)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "does not start with SOI"),
        (b"\x89PNG\r\n\x1a\n", "does not start with SOI"),
        (SOI, "cut short"),
        (SOI + b"\xff\xe0\x00", "cut short"),
        (SOI + b"\x00\x10JFIF", "expected a marker"),
        (SOI + b"\xff\xe0\x00\x01", "bad length"),
        (SOI + b"\xff\xe0\x00\x40" + bytes(10), "bad length"),
        (SOI + segment(0xDA, bytes(6)) + EOI, "before any start-of-frame"),
        (SOI + EOI, "before any start-of-frame"),
        (SOI + segment(0xC0, bytes([8, 0, 90])), "start-of-frame segment of length"),
        (SOI + segment(0xC0, bytes([8, 0, 0, 0, 160, 1])), "size 160x0"),
    ],
)
def test_malformed_data_has_no_dimensions(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jpeg_dimensions(data)


def test_a_cut_ffmpeg_frame_has_no_dimensions(samples: Samples) -> None:
    with pytest.raises(ValueError, match=r"cut short|bad length"):
        jpeg_dimensions(samples.large[0][:100])


async def test_read_frames_yields_whole_frames_until_eof(samples: Samples) -> None:
    reader = asyncio.StreamReader()
    stream = b"junk" + b"".join(samples.small)
    for chunk in cut(stream, [1000, 7, 4096]):
        reader.feed_data(chunk)
    reader.feed_data(samples.small[0][:50])  # a partial frame at EOF is not a frame
    reader.feed_eof()
    splitter = JpegSplitter()
    frames = [f async for f in read_frames(reader, chunk_size=999, splitter=splitter)]
    assert frames == list(samples.small)
    assert splitter.skipped_bytes == 4
    assert splitter.buffered_bytes == 50
