"""H.264 and H.265 NAL units: RTP depacketising (RFC 6184, RFC 7798), keyframes, frame size.

What the keyframe feeds (:mod:`heldar.media.feed`) need. An :class:`AccessUnitAssembler` turns
RTP payloads into access units (all NAL units of one picture, one RTP timestamp) and tells which
are keyframes (IDR in H.264, IRAP in H.265) without copying the payload of any other picture: a
non-key picture costs a header check per packet. :func:`frame_size` reads the picture size (after
cropping) from a sequence parameter set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

START_CODE = b"\x00\x00\x00\x01"


class Codec(StrEnum):
    H264 = "h264"
    H265 = "h265"


# The names RTP (rtpmap) gives the codecs.
RTP_ENCODINGS = {"H264": Codec.H264, "H265": Codec.H265}

# H.264 NAL unit types (ITU-T H.264 table 7-1) and RTP payload types (RFC 6184).
_H264_IDR = 5
_H264_SPS = 7
_H264_PPS = 8
_H264_AUD = 9
_H264_STAP_A = 24
_H264_FU_A = 28
# H.265 NAL unit types (ITU-T H.265 table 7-1) and RTP payload types (RFC 7798).
_H265_IRAP_FIRST = 16
_H265_IRAP_LAST = 23
_H265_VPS = 32
_H265_SPS = 33
_H265_PPS = 34
_H265_AUD = 35
_H265_AP = 48
_H265_FU = 49
_H265_PACI = 50

# Access unit delimiters, written after each access unit so that ffmpeg's parser, which ends a
# picture when the next one begins, hands it to the decoder at once instead of one picture later.
ACCESS_UNIT_DELIMITERS = {
    Codec.H264: START_CODE + bytes([_H264_AUD, 0xF0]),  # primary_pic_type 7: any slice
    Codec.H265: START_CODE + bytes([_H265_AUD << 1, 0x01, 0x50]),  # pic_type 2: any slice
}
# Parameter set types in the order a decoder needs them.
PARAMETER_SET_TYPES = {
    Codec.H264: (_H264_SPS, _H264_PPS),
    Codec.H265: (_H265_VPS, _H265_SPS, _H265_PPS),
}


def nal_type(codec: Codec, nal: bytes | memoryview) -> int:
    if codec is Codec.H264:
        return nal[0] & 0x1F
    return (nal[0] >> 1) & 0x3F


def is_key(codec: Codec, kind: int) -> bool:
    """Whether a NAL unit type starts a keyframe (IDR; IRAP in H.265)."""
    if codec is Codec.H264:
        return kind == _H264_IDR
    return _H265_IRAP_FIRST <= kind <= _H265_IRAP_LAST


@dataclass(slots=True)
class AccessUnit:
    """The NAL units of one keyframe picture, in decoding order."""

    timestamp: int  # RTP timestamp
    nals: list[bytes] = field(default_factory=list)

    def annex_b(self, parameter_sets: Iterable[bytes] = ()) -> bytes:
        """Start-code separated, led by ``parameter_sets`` the unit does not carry itself."""
        own = set(self.nals)
        leading = [nal for nal in parameter_sets if nal not in own]
        return b"".join(START_CODE + nal for nal in (*leading, *self.nals))


class AccessUnitAssembler:
    """RTP packets in, complete keyframe access units out.

    A picture is collected from its first packet until its key status is known (a parameter set
    or SEI may come first); from then on a non-key picture's packets are only counted. A picture
    ends with the RTP marker bit or when the timestamp changes. A lost packet (a gap in the
    sequence numbers) inside a keyframe discards that keyframe: a decoder must not get a broken
    one. Parameter sets seen in the stream replace those from the SDP.
    """

    def __init__(self, codec: Codec, parameter_sets: Iterable[bytes] = ()) -> None:
        self.codec = codec
        self.parameter_sets: dict[int, bytes] = {}
        for nal in parameter_sets:
            self._keep_parameter_set(nal)
        self._timestamp: int | None = None
        self._nals: list[bytes] = []
        self._key: bool | None = None  # None: not known yet
        self._broken = False
        self._fragment: bytearray | None = None
        self._next_sequence: int | None = None
        self.lost_packets = 0

    @property
    def sequence_parameter_set(self) -> bytes | None:
        """The latest SPS (it tells the picture size: :func:`frame_size`)."""
        return self.parameter_sets.get(_H264_SPS if self.codec is Codec.H264 else _H265_SPS)

    def ordered_parameter_sets(self) -> list[bytes]:
        return [
            self.parameter_sets[kind]
            for kind in PARAMETER_SET_TYPES[self.codec]
            if kind in self.parameter_sets
        ]

    def push(
        self, payload: memoryview, sequence: int, timestamp: int, marker: bool
    ) -> AccessUnit | None:
        """One RTP packet's payload; the keyframe it completes, if any."""
        done = None
        lost = self._next_sequence is not None and sequence != self._next_sequence
        if lost:
            assert self._next_sequence is not None
            self.lost_packets += (sequence - self._next_sequence) & 0xFFFF
            self._broken = True
            self._fragment = None
        self._next_sequence = (sequence + 1) & 0xFFFF
        if timestamp != self._timestamp:
            done = self._finish()
            self._timestamp = timestamp
            # What was lost may have been this picture's start as well as the last one's end.
            self._broken = lost
        if self._key is not False and len(payload) > 0:
            self._depacketise(payload)
        if marker:
            done = self._finish() or done
        return done

    def _finish(self) -> AccessUnit | None:
        unit = None
        if self._key and not self._broken and self._timestamp is not None:
            unit = AccessUnit(self._timestamp, self._nals)
        self._timestamp = None
        self._nals = []
        self._key = None
        self._broken = False
        self._fragment = None
        return unit

    def _depacketise(self, payload: memoryview) -> None:
        kind = nal_type(self.codec, payload)
        if self.codec is Codec.H264:
            aggregate, fragment, header_size = _H264_STAP_A, _H264_FU_A, 1
        else:
            aggregate, fragment, header_size = _H265_AP, _H265_FU, 2
            if kind == _H265_PACI:
                return
        if kind == aggregate:
            offset = header_size
            while offset + 2 <= len(payload):
                size = int.from_bytes(payload[offset : offset + 2], "big")
                offset += 2
                self._nal(payload[offset : offset + size])
                offset += size
        elif kind == fragment:
            self._fragment_unit(payload, header_size)
        else:
            self._nal(payload)

    def _fragment_unit(self, payload: memoryview, header_size: int) -> None:
        fu_header = payload[header_size]
        start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
        if start:
            if self.codec is Codec.H264:
                header = bytes([(payload[0] & 0xE0) | (fu_header & 0x1F)])
            else:
                header = bytes([(payload[0] & 0x81) | ((fu_header & 0x3F) << 1), payload[1]])
            self._fragment = bytearray(header)
            self._classify(nal_type(self.codec, header))
            if self._key is False:
                self._fragment = None
                return
        if self._fragment is None:  # the start was lost, or this picture is not wanted
            return
        self._fragment += payload[header_size + 1 :]
        if end:
            self._nals.append(bytes(self._fragment))
            self._fragment = None

    def _nal(self, nal: memoryview) -> None:
        """A whole NAL unit; copied only if it is a parameter set or part of a keyframe."""
        if not nal:
            return
        kind = nal_type(self.codec, nal)
        if kind in PARAMETER_SET_TYPES[self.codec]:
            self._keep_parameter_set(bytes(nal))
        else:
            self._classify(kind)
        if self._key is not False:
            self._nals.append(bytes(nal))

    def _classify(self, kind: int) -> None:
        """A picture is a keyframe when its first slice is; VCL NAL types say so."""
        if self._key is not None:
            return
        if is_key(self.codec, kind):
            self._key = True
        elif _is_slice(self.codec, kind):
            self._key = False
            self._nals = []

    def _keep_parameter_set(self, nal: bytes) -> None:
        self.parameter_sets[nal_type(self.codec, nal)] = nal


def _is_slice(codec: Codec, kind: int) -> bool:
    if codec is Codec.H264:
        return 1 <= kind <= 5
    return kind < 32


class _Bits:
    """A big-endian bit reader with Exp-Golomb codes (H.264 / H.265 section 9.2)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = 8 * len(data)

    def u(self, count: int) -> int:
        if count > self._left:
            raise ValueError("parameter set ends early")
        self._left -= count
        return (self._value >> self._left) & ((1 << count) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


def rbsp(nal: bytes) -> bytes:
    """The payload without emulation prevention bytes (``00 00 03`` becomes ``00 00``)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


# (SubWidthC, SubHeightC) by chroma_format_idc; 0 (monochrome) crops in luma samples.
_CHROMA_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_H265_PROFILE_TIER_LEVEL_BITS = 88
_H265_LEVEL_BITS = 8
_H265_MAX_SUB_LAYERS = 8


def frame_size(codec: Codec, sps: bytes) -> tuple[int, int]:
    """(width, height) of the pictures a sequence parameter set describes, after cropping.

    Raises ``ValueError`` for a parameter set that ends early or is not one.
    """
    if codec is Codec.H264:
        return _h264_frame_size(_Bits(rbsp(sps[1:])))
    return _h265_frame_size(_Bits(rbsp(sps[2:])))


def _h264_frame_size(bits: _Bits) -> tuple[int, int]:
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(12 if chroma_format_idc == 3 else 8):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    pic_order_cnt_type = bits.ue()
    if pic_order_cnt_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if bits.u(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    sub_width, sub_height = _CHROMA_SUBSAMPLING.get(chroma_format_idc, (1, 1))
    crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (left + right)
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (top + bottom)
    return width, height


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last, following = 8, 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def _h265_frame_size(bits: _Bits) -> tuple[int, int]:
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.u(1)  # sps_temporal_id_nesting_flag
    bits.u(_H265_PROFILE_TIER_LEVEL_BITS)
    bits.u(_H265_LEVEL_BITS)
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (_H265_MAX_SUB_LAYERS - sub_layers))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            bits.u(_H265_PROFILE_TIER_LEVEL_BITS)
        if level_present:
            bits.u(_H265_LEVEL_BITS)
    bits.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = bits.ue()
    if chroma_format_idc == 3:
        bits.u(1)  # separate_colour_plane_flag
    width, height = bits.ue(), bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        sub_width, sub_height = _CHROMA_SUBSAMPLING.get(chroma_format_idc, (1, 1))
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    return width, height
