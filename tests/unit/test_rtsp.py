"""The RTSP client's pure parts: SDP, control URLs, RTP headers, interleaved framing, Digest."""

from __future__ import annotations

import base64

import pytest

from heldar.media.nal import Codec
from heldar.media.rtsp import (
    RtspError,
    RtspSession,
    UnsupportedStream,
    _Credentials,
    parse_sdp,
    resolve_control,
    rtp_packet,
)

SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
PPS = bytes.fromhex("68ebe3cb22c0")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sdp(*media: str, session_control: str | None = None) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=cam", "t=0 0"]
    if session_control:
        lines.append(f"a=control:{session_control}")
    return "\r\n".join([*lines, *media]) + "\r\n"


H264_MEDIA = (
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={b64(SPS)},{b64(PPS)}\r\n"
    "a=control:stream=0"
)


def test_sdp_gives_the_video_track_its_parameter_sets_and_its_control_url() -> None:
    audio = "m=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:stream=1"
    track = parse_sdp(sdp(audio, H264_MEDIA), "rtsp://127.0.0.1:8554/cam/")
    assert track.codec is Codec.H264
    assert (track.payload_type, track.clock_rate) == (96, 90000)
    assert track.control == "rtsp://127.0.0.1:8554/cam/stream=0"
    assert track.session_url == "rtsp://127.0.0.1:8554/cam/"
    assert track.parameter_sets == [SPS, PPS]


def test_sdp_h265_sprop_sets_and_a_session_level_control() -> None:
    media = (
        "m=video 0 RTP/AVP 97\r\na=rtpmap:97 H265/90000\r\n"
        "a=fmtp:97 sprop-vps=QAE;sprop-sps=QgE;sprop-pps=RAE\r\na=control:track1"
    )
    track = parse_sdp(sdp(media, session_control="rtsp://10.0.0.9/live"), "rtsp://x/ignored")
    assert track.codec is Codec.H265
    assert track.control == "rtsp://10.0.0.9/live/track1"
    assert track.session_url == "rtsp://10.0.0.9/live"
    assert track.parameter_sets == [b"\x40\x01", b"\x42\x01", b"\x44\x01"]


def test_a_stream_without_h264_or_h265_video_is_unsupported_and_says_what_it_has() -> None:
    mjpeg = "m=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000"
    with pytest.raises(UnsupportedStream, match="video: JPEG"):
        parse_sdp(sdp(mjpeg), "rtsp://127.0.0.1/cam")
    with pytest.raises(UnsupportedStream, match="video: none"):
        parse_sdp(sdp(), "rtsp://127.0.0.1/cam")


@pytest.mark.parametrize(
    ("base", "control", "url"),
    [
        ("rtsp://h/cam", "trackID=1", "rtsp://h/cam/trackID=1"),
        ("rtsp://h/cam/", "trackID=1", "rtsp://h/cam/trackID=1"),
        ("rtsp://h/cam", "*", "rtsp://h/cam"),
        ("rtsp://h/cam", "rtsp://other/cam/v", "rtsp://other/cam/v"),
    ],
)
def test_control_urls_resolve_like_cameras_expect(base: str, control: str, url: str) -> None:
    assert resolve_control(base, control) == url


def rtp(payload: bytes, *, csrc: int = 0, extension: bytes = b"", padding: int = 0) -> bytes:
    first = 0x80 | csrc | (0x10 if extension else 0) | (0x20 if padding else 0)
    header = bytes([first, 0x80 | 96]) + (513).to_bytes(2, "big") + (90000).to_bytes(4, "big")
    header += bytes(4) + bytes(4 * csrc)
    if extension:
        header += b"\xbe\xde" + (len(extension) // 4).to_bytes(2, "big") + extension
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + tail


def test_rtp_header_fields_and_the_payload_past_csrcs_extension_and_padding() -> None:
    packet = rtp(b"\x65abc", csrc=2, extension=bytes(8), padding=3)
    parsed = rtp_packet(memoryview(packet))
    assert parsed is not None
    assert (parsed.sequence, parsed.timestamp, parsed.marker) == (513, 90000, True)
    assert bytes(parsed.payload) == b"\x65abc"


def test_malformed_rtp_is_skipped() -> None:
    assert rtp_packet(memoryview(b"\x80\x60")) is None  # shorter than a header
    assert rtp_packet(memoryview(b"\x40" + bytes(15))) is None  # version 1
    assert rtp_packet(memoryview(bytes([0x8F]) + bytes(15))) is None  # 15 CSRCs past the end


def interleaved(channel: int, data: bytes) -> bytes:
    return b"$" + bytes([channel]) + len(data).to_bytes(2, "big") + data


def test_interleaved_framing_across_reads_and_around_a_keepalive_answer() -> None:
    session = RtspSession("rtsp://127.0.0.1:8554/cam", 1.0)
    answer = b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nContent-Length: 4\r\n\r\nabcd"
    stream = interleaved(0, b"one") + answer + interleaved(1, b"rtcp") + interleaved(0, b"two")
    got: list[tuple[int, bytes]] = []
    for cut in (5, 30, len(stream)):  # pieces that split a header, an answer and a packet
        piece, stream = stream[:cut], stream[cut:]
        got += [(channel, bytes(data)) for channel, data in session.packets(piece)]
    assert got == [(0, b"one"), (1, b"rtcp"), (0, b"two")]


def test_digest_answer_matches_rfc_2617() -> None:
    """The worked example of RFC 2617 section 3.5 (there for HTTP GET; the rule is the same)."""
    credentials = _Credentials("Mufasa", "Circle Of Life", cnonce=lambda: "0a4f113b")
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert credentials.accept(["Basic realm=x", challenge])
    header = credentials.header("GET", "/dir/index.html")
    assert header is not None
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header


def test_basic_only_servers_get_basic_and_the_password_is_never_shown() -> None:
    credentials = _Credentials("admin", "s3cret!")
    assert credentials.accept(['Basic realm="cam"'])
    assert credentials.header("DESCRIBE", "rtsp://h/") == f"Basic {b64(b'admin:s3cret!')}"
    assert "s3cret" not in repr(credentials)
    session = RtspSession("rtsp://admin:s3cret%21@127.0.0.1:8554/cam", 1.0)
    assert session.url == "rtsp://127.0.0.1:8554/cam"
    assert "s3cret" not in repr(vars(session))


def test_urls_the_client_cannot_use_are_named_errors() -> None:
    with pytest.raises(RtspError, match="unsupported scheme 'http'"):
        RtspSession("http://127.0.0.1/cam", 1.0)
    with pytest.raises(RtspError, match="port"):
        RtspSession("rtsp://127.0.0.1:99999/cam", 1.0)
