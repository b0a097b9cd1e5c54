"""RTP depacketising of H.264 / H.265 keyframes and the picture size in a parameter set."""

from __future__ import annotations

import pytest

from heldar.media.nal import (
    ACCESS_UNIT_DELIMITERS,
    START_CODE,
    AccessUnit,
    AccessUnitAssembler,
    Codec,
    frame_size,
    rbsp,
)

# Sequence parameter sets written by x264 / x265 (ffmpeg, testsrc2, yuv420p).
SPS_H264_720P = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
SPS_H264_1080P = bytes.fromhex(
    "67640028acd940780227e5c044000003000400000300c83c60c658"
)  # 1088 cropped
SPS_H264_360P = bytes.fromhex("6764001eacd940a02ff97011000003000100000300320f162d96")
SPS_H265_1080P = bytes.fromhex(
    "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c84"
)
PPS_H264 = bytes.fromhex("68ebe3cb22c0")
IDR = bytes([0x65, 0x88]) + bytes(range(40))
P_SLICE = bytes([0x41, 0x9A]) + bytes(range(30))


@pytest.mark.parametrize(
    ("codec", "sps", "size"),
    [
        (Codec.H264, SPS_H264_720P, (1280, 720)),
        (Codec.H264, SPS_H264_1080P, (1920, 1080)),
        (Codec.H264, SPS_H264_360P, (640, 360)),
        (Codec.H265, SPS_H265_1080P, (1920, 1080)),
    ],
)
def test_frame_size_reads_the_cropped_picture_size(
    codec: Codec, sps: bytes, size: tuple[int, int]
) -> None:
    assert frame_size(codec, sps) == size


def test_a_truncated_parameter_set_is_an_error_not_a_size() -> None:
    with pytest.raises(ValueError, match="ends early"):
        frame_size(Codec.H264, SPS_H264_720P[:6])


def test_rbsp_removes_emulation_prevention_bytes() -> None:
    assert rbsp(bytes.fromhex("0000030100000300")) == bytes.fromhex("000001000000")
    assert rbsp(bytes.fromhex("00000003")) == bytes.fromhex("000000")


class Packets:
    """RTP payloads with consecutive sequence numbers, into an assembler."""

    def __init__(self, codec: Codec = Codec.H264, parameter_sets: tuple[bytes, ...] = ()) -> None:
        self.assembler = AccessUnitAssembler(codec, parameter_sets)
        self.sequence = 0

    def send(self, payload: bytes, timestamp: int, *, marker: bool = False) -> list[bytes] | None:
        unit = self.assembler.push(memoryview(payload), self.sequence, timestamp, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        return None if unit is None else unit.nals

    def skip(self, count: int = 1) -> None:
        self.sequence = (self.sequence + count) & 0xFFFF


def stap_a(*nals: bytes) -> bytes:
    return bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def fu_a(nal: bytes, pieces: int) -> list[bytes]:
    """``nal`` as FU-A fragments (RFC 6184 5.8)."""
    indicator = (nal[0] & 0xE0) | 28
    body = nal[1:]
    step = -(-len(body) // pieces)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    out = []
    for index, chunk in enumerate(chunks):
        header = nal[0] & 0x1F
        header |= 0x80 if index == 0 else 0
        header |= 0x40 if index == len(chunks) - 1 else 0
        out.append(bytes([indicator, header]) + chunk)
    return out


def test_a_keyframe_comes_out_whole_with_its_parameter_sets_and_p_frames_not_at_all() -> None:
    packets = Packets()
    assert packets.send(stap_a(SPS_H264_720P, PPS_H264), 1000) is None
    for piece in fu_a(IDR, 3)[:-1]:
        assert packets.send(piece, 1000) is None
    assert packets.send(fu_a(IDR, 3)[-1], 1000, marker=True) == [SPS_H264_720P, PPS_H264, IDR]
    for piece in fu_a(P_SLICE, 2):
        assert packets.send(piece, 4600, marker=piece[1] & 0x40 != 0) is None
    assert packets.send(P_SLICE, 8200, marker=True) is None
    assert packets.assembler.ordered_parameter_sets() == [SPS_H264_720P, PPS_H264]


def test_a_picture_also_ends_when_the_timestamp_changes_without_a_marker() -> None:
    packets = Packets()
    assert packets.send(IDR, 1000) is None
    assert packets.send(P_SLICE, 4600) == [IDR]


def test_a_lost_packet_inside_a_keyframe_discards_it_and_the_next_one_is_whole() -> None:
    packets = Packets()
    pieces = fu_a(IDR, 4)
    packets.send(pieces[0], 1000)
    packets.skip()  # pieces[1] lost
    packets.send(pieces[2], 1000)
    assert packets.send(pieces[3], 1000, marker=True) is None
    assert packets.assembler.lost_packets == 1
    for piece in pieces[:-1]:
        packets.send(piece, 91000)
    assert packets.send(pieces[-1], 91000, marker=True) == [IDR]


def test_a_loss_at_a_picture_boundary_discards_the_picture_that_follows() -> None:
    """The lost packet may have been the new picture's start (one of several slices)."""
    packets = Packets()
    packets.send(P_SLICE, 1000, marker=True)
    packets.skip()
    assert packets.send(IDR, 4600, marker=True) is None


def test_sdp_parameter_sets_lead_a_keyframe_that_carries_none() -> None:
    packets = Packets(parameter_sets=(SPS_H264_720P, PPS_H264))
    nals = packets.send(IDR, 1000, marker=True)
    assert nals == [IDR]
    unit_sets = packets.assembler.ordered_parameter_sets()
    annex_b = START_CODE + SPS_H264_720P + START_CODE + PPS_H264 + START_CODE + IDR
    assert AccessUnit(1000, nals).annex_b(unit_sets) == annex_b


def test_h265_aggregation_and_fragmentation_units() -> None:
    vps, sps, pps = bytes([0x40, 0x01, 1, 2]), SPS_H265_1080P, bytes([0x44, 0x01, 3])
    idr = bytes([0x26, 0x01]) + bytes(range(50))  # IDR_W_RADL (19)
    trail = bytes([0x02, 0x01]) + bytes(range(20))  # TRAIL_R (1)
    packets = Packets(Codec.H265)
    ap = bytes([48 << 1, 0x01]) + b"".join(len(n).to_bytes(2, "big") + n for n in (vps, sps, pps))
    assert packets.send(ap, 7) is None
    fu_payloads = [idr[2:20], idr[20:40], idr[40:]]
    for index, body in enumerate(fu_payloads):
        header = 19 | (0x80 if index == 0 else 0) | (0x40 if index == 2 else 0)
        result = packets.send(bytes([49 << 1, 0x01, header]) + body, 7, marker=index == 2)
    assert result == [vps, sps, pps, idr]
    assert packets.assembler.ordered_parameter_sets() == [vps, sps, pps]
    assert packets.send(trail, 3607, marker=True) is None


def test_access_unit_delimiters_are_aud_nal_units() -> None:
    h264, h265 = ACCESS_UNIT_DELIMITERS[Codec.H264], ACCESS_UNIT_DELIMITERS[Codec.H265]
    assert h264.startswith(START_CODE) and h264[4] & 0x1F == 9
    assert h265.startswith(START_CODE) and (h265[4] >> 1) & 0x3F == 35
