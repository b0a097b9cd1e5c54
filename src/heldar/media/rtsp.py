"""A minimal RTSP client for one video stream over TCP (RFC 2326), standard library only.

What the keyframe feeds (:mod:`heldar.media.feed`) need and no more: ``DESCRIBE`` (with
Basic or Digest authentication, RFC 2617), the SDP of the first video stream, ``SETUP`` with
RTP interleaved in the RTSP connection, ``PLAY``, keep-alives, and a reader that splits the
interleaved byte stream into RTP packets. Connecting uses a blocking socket (run it in a thread);
playing, a non-blocking one read in batches (:meth:`RtspSession.receive_available` takes
whatever the socket holds), which is the point: ffmpeg's RTSP demuxer makes a ``poll`` and a
``recvfrom`` per RTP packet.

Errors are :class:`RtspError`, whose messages never carry the credentials; the URL appears in
them only without its user info.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from heldar.media.nal import RTP_ENCODINGS, Codec

DEFAULT_PORT = 554
RTSPS_PORT = 322
USER_AGENT = "heldar"
# One recv takes up to this much; a batch of 50 ms of a 20 Mbit/s camera is about 125 kB.
RECEIVE_BYTES = 256 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# Keep-alive: at half the session timeout the server announces (RFC 2326 default: 60 s).
DEFAULT_SESSION_TIMEOUT_S = 60.0
MIN_KEEPALIVE_S = 5.0
RTP_HEADER_BYTES = 12
RTP_VERSION = 2
HTTP_UNAUTHORIZED = 401
HTTP_OK = 200
INTERLEAVED_HEADER_BYTES = 4

_RTP_HEADER = struct.Struct("!BBHI")  # V/P/X/CC, M/PT, sequence number, timestamp
_U16 = struct.Struct("!H")
_STATUS_LINE = re.compile(r"^RTSP/1\.\d (\d{3}) ?(.*)$")
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_INTERLEAVED = re.compile(r"interleaved=(\d+)(?:-(\d+))?")


class RtspError(Exception):
    """The session failed; the message names the cause and never the credentials."""


class UnsupportedStream(RtspError):
    """What this client cannot take, where ffmpeg's RTSP client may: no H.264 or H.265 video, an
    answer that is not RTSP, or a refusal of how it asks (a redirect, an unsupported method or
    transport). A camera that is down, refuses the credentials or lacks the path is a plain
    :class:`RtspError`: ffmpeg would fail there too."""


# Answers that refuse the camera's access (or say it is not there), not this client's dialect.
_CAMERA_REFUSALS = frozenset({401, 403, 404, 500, 503})


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """The first H.264 / H.265 stream of an SDP."""

    codec: Codec
    payload_type: int
    clock_rate: int
    control: str  # the track's URL, for SETUP
    session_url: str  # the aggregate URL (Content-Base or session control), for PLAY
    parameter_sets: list[bytes] = field(default_factory=list)


class RtpPacket(NamedTuple):  # a tuple: made for every packet, so made cheaply
    sequence: int
    timestamp: int
    marker: bool
    payload: memoryview


def parse_sdp(sdp: str, base_url: str) -> VideoTrack:
    """The first video stream the receiver can take; :class:`UnsupportedStream` if none."""
    session_control: str | None = None
    media: list[list[str]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        elif line.startswith("a=control:"):
            session_control = line.removeprefix("a=control:")
    base = resolve_control(base_url, session_control) if session_control else base_url
    seen: list[str] = []
    for section in media:
        fields = section[0].removeprefix("m=").split()
        if len(fields) < 4 or fields[0] != "video":
            continue
        for payload_type in fields[3:]:
            encoding = _attribute(section, f"a=rtpmap:{payload_type} ")
            if encoding is None:
                continue
            name, _, rate = encoding.partition("/")
            codec = RTP_ENCODINGS.get(name.upper())
            if codec is None:
                seen.append(name)
                continue
            control = _attribute(section, "a=control:") or ""
            fmtp = _attribute(section, f"a=fmtp:{payload_type} ") or ""
            return VideoTrack(
                codec=codec,
                payload_type=int(payload_type),
                clock_rate=int(rate.partition("/")[0] or 90000),
                control=resolve_control(base, control) if control else base,
                session_url=base,
                parameter_sets=_sprop_parameter_sets(fmtp),
            )
    named = ", ".join(seen) if seen else "none"
    raise UnsupportedStream(f"no H.264 or H.265 video in the stream description (video: {named})")


def _attribute(section: list[str], prefix: str) -> str | None:
    for line in section:
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    return None


def _sprop_parameter_sets(fmtp: str) -> list[bytes]:
    """Parameter sets from ``sprop-parameter-sets`` (H.264) or ``sprop-vps/sps/pps`` (H.265)."""
    params = {}
    for item in fmtp.split(";"):
        key, _, value = item.strip().partition("=")
        params[key.lower()] = value
    names = ("sprop-parameter-sets", "sprop-vps", "sprop-sps", "sprop-pps")
    sets = []
    for name in names:
        for encoded in filter(None, params.get(name, "").split(",")):
            try:
                sets.append(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
            except ValueError:
                continue
    return [nal for nal in sets if nal]


def resolve_control(base: str, control: str) -> str:
    """A track's URL from its ``a=control`` (absolute, ``*``, or relative to ``base``)."""
    if control == "*":
        return base
    if control.lower().startswith(("rtsp://", "rtsps://")):
        return control
    return base if not control else f"{base.rstrip('/')}/{control}"


def rtp_packet(data: memoryview) -> RtpPacket | None:
    """Parse one RTP packet (RFC 3550 section 5.1); None for a malformed one."""
    end = len(data)
    if end < RTP_HEADER_BYTES:
        return None
    first, second, sequence, timestamp = _RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        return None
    offset = RTP_HEADER_BYTES + 4 * (first & 0x0F)
    if first & 0x20:  # padding: the last byte counts it
        end -= data[end - 1]
    if first & 0x10:  # header extension
        if offset + 4 > end:
            return None
        offset += 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
    if offset > end:
        return None
    return RtpPacket(sequence, timestamp, second >= 0x80, data[offset:end])


def _interleaved_end(buffer: bytes, offset: int) -> int | None:
    """Where the interleaved frame at ``offset`` (``$``, channel, 16-bit size, data) ends; None
    while it is incomplete."""
    if offset + INTERLEAVED_HEADER_BYTES > len(buffer):
        return None
    end = offset + INTERLEAVED_HEADER_BYTES + _U16.unpack_from(buffer, offset + 2)[0]
    return end if end <= len(buffer) else None


class _Credentials:
    """Basic or Digest answers to a server's challenge; never printed."""

    def __init__(
        self, username: str, password: str, cnonce: Callable[[], str] = lambda: os.urandom(8).hex()
    ) -> None:
        self._cnonce = cnonce
        self._username = username
        self._password = password
        self._challenge: dict[str, str] | None = None
        self._basic = False
        self._count = 0

    def __repr__(self) -> str:
        return "_Credentials(***)"

    def accept(self, challenges: list[str]) -> bool:
        """Take the strongest challenge offered; False if none is usable."""
        for value in challenges:
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "digest":
                params = {m[1].lower(): m[2] or m[3] for m in _AUTH_PARAM.finditer(rest)}
                if params.get("algorithm", "MD5").upper() == "MD5" and "nonce" in params:
                    self._challenge, self._basic = params, False
                    return True
        for value in challenges:
            if value.strip().lower().startswith("basic"):
                self._challenge, self._basic = None, True
                return True
        return False

    def header(self, method: str, uri: str) -> str | None:
        if self._basic:
            token = base64.b64encode(f"{self._username}:{self._password}".encode()).decode()
            return f"Basic {token}"
        challenge = self._challenge
        if challenge is None:
            return None
        realm, nonce = challenge.get("realm", ""), challenge["nonce"]
        ha1 = _md5(f"{self._username}:{realm}:{self._password}")
        ha2 = _md5(f"{method}:{uri}")
        fields = {"username": self._username, "realm": realm, "nonce": nonce, "uri": uri}
        qop = challenge.get("qop")
        if qop is not None and "auth" in [q.strip() for q in qop.split(",")]:
            self._count += 1
            count, cnonce = f"{self._count:08x}", self._cnonce()
            fields |= {"qop": "auth", "nc": count, "cnonce": cnonce}
            fields["response"] = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        else:
            fields["response"] = _md5(f"{ha1}:{nonce}:{ha2}")
        if "opaque" in challenge:
            fields["opaque"] = challenge["opaque"]
        unquoted = {"qop", "nc"}
        parts = [f"{k}={v}" if k in unquoted else f'{k}="{v}"' for k, v in fields.items()]
        return "Digest " + ", ".join(parts)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class RtspSession:
    """One RTSP connection playing one video track, RTP interleaved on channel ``rtp_channel``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "rtsp":
            raise RtspError(f"unsupported scheme {parts.scheme!r} (keyframe feeds speak rtsp)")
        if not parts.hostname:
            raise RtspError("the URL names no host")
        self._host = parts.hostname
        try:
            self._port = parts.port or DEFAULT_PORT
        except ValueError:
            raise RtspError("the URL's port is not a number in 1..65535") from None
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port:
            netloc += f":{parts.port}"
        # The URL without user info: what requests name and messages show.
        self.url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._credentials = (
            _Credentials(unquote(parts.username or ""), unquote(parts.password or ""))
            if parts.username is not None
            else None
        )
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._pending = b""
        self._receive_buffer = memoryview(bytearray(RECEIVE_BYTES))
        self._sequence = 0
        self._session: str | None = None
        self.keepalive_s = DEFAULT_SESSION_TIMEOUT_S / 2
        self._keepalive_method = "OPTIONS"
        self._keepalive_url = self.url
        self.rtp_channel = 0

    def open(self) -> VideoTrack:
        """Connect, describe, set up and play; the track being played."""
        try:
            self._sock = socket.create_connection((self._host, self._port), self._timeout_s)
        except OSError as exc:
            raise RtspError(f"cannot connect to {self.url}: {exc.strerror or exc}") from None
        options = self._request("OPTIONS", self.url)
        if "GET_PARAMETER" in (options.header("public") or "").upper():
            self._keepalive_method = "GET_PARAMETER"
        described = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = described.header("content-base") or described.header("content-location")
        track = parse_sdp(described.body.decode("utf-8", "replace"), base or self.url)
        transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
        setup = self._request("SETUP", track.control, {"Transport": transport})
        session = setup.header("session")
        if session is None:
            raise UnsupportedStream(f"{self.url}: SETUP answered without a session")
        session_id, _, params = session.partition(";")
        self._session = session_id.strip()
        if match := re.search(r"timeout=(\d+)", params):
            self.keepalive_s = max(MIN_KEEPALIVE_S, int(match[1]) / 2)
        if match := _INTERLEAVED.search(setup.header("transport") or ""):
            self.rtp_channel = int(match[1])
        self._request("PLAY", track.session_url, {"Range": "npt=0.000-"})
        self._keepalive_url = track.session_url
        return track

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def set_nonblocking(self) -> None:
        """After :meth:`open`: read with :meth:`receive_available` from now on."""
        assert self._sock is not None
        self._sock.setblocking(False)

    def keepalive(self) -> None:
        """Send a keep-alive request; its answer is skipped by :meth:`packets`."""
        with contextlib.suppress(BlockingIOError):  # a full send buffer: the next one will do
            self._send(self._keepalive_method, self._keepalive_url, {})

    def receive_available(self) -> bytes | None:
        """On a non-blocking session: what the socket holds, None if nothing."""
        try:
            return self.receive()
        except BlockingIOError:
            return None

    def receive(self) -> bytes:
        """Whatever the socket holds: on a blocking session waiting up to the timeout for
        something, on a non-blocking one raising ``BlockingIOError`` if there is nothing."""
        assert self._sock is not None
        try:
            size = self._sock.recv_into(self._receive_buffer)
        except TimeoutError:
            raise RtspError(f"{self.url}: no data for {self._timeout_s:g} s") from None
        except BlockingIOError:
            raise
        except OSError as exc:
            raise RtspError(f"{self.url}: {exc.strerror or exc}") from None
        if not size:
            raise RtspError(f"{self.url}: the camera closed the connection")
        return self._receive_buffer[:size].tobytes()

    def packets(self, data: bytes) -> Iterator[tuple[int, memoryview]]:
        """Split received bytes into (channel, packet); keeps an incomplete rest for the next
        call and skips RTSP answers (keep-alives) in between."""
        buffer = self._pending + data if self._pending else data
        view = memoryview(buffer)
        offset, end = 0, len(buffer)
        while offset < end:
            if buffer[offset] == 0x24:  # '$': interleaved binary data
                frame_end = _interleaved_end(buffer, offset)
                if frame_end is None:
                    break
                yield buffer[offset + 1], view[offset + INTERLEAVED_HEADER_BYTES : frame_end]
                offset = frame_end
            elif buffer.startswith(b"RTSP/", offset):
                header_end = buffer.find(b"\r\n\r\n", offset)
                if header_end < 0:
                    break
                length = re.search(rb"(?im)^content-length:\s*(\d+)", buffer[offset:header_end])
                message_end = header_end + 4 + (int(length[1]) if length else 0)
                if message_end > end:
                    break
                offset = message_end
            else:  # out of step: resynchronise on the next '$'
                found = buffer.find(b"$", offset + 1)
                offset = end if found < 0 else found
        self._pending = buffer[offset:]

    def _request(self, method: str, uri: str, headers: dict[str, str] | None = None) -> Response:
        headers = headers or {}
        response = self._exchange(method, uri, headers)
        challenges = response.headers.get("www-authenticate", [])
        if (
            response.status == HTTP_UNAUTHORIZED
            and self._credentials is not None
            and self._credentials.accept(challenges)
        ):
            response = self._exchange(method, uri, headers)
        if response.status == HTTP_UNAUTHORIZED:
            told = "the credentials were refused" if self._credentials else "no credentials set"
            raise RtspError(f"{self.url}: {method} needs authentication ({told})")
        if response.status != HTTP_OK:
            message = f"{self.url}: {method} answered {response.status} {response.reason}"
            if response.status in _CAMERA_REFUSALS:
                raise RtspError(message)
            raise UnsupportedStream(message)
        return response

    def _exchange(self, method: str, uri: str, headers: dict[str, str]) -> Response:
        self._send(method, uri, headers)
        deadline = time.monotonic() + self._timeout_s
        while True:
            response = self._parse_response()
            if response is not None:
                return response
            if time.monotonic() > deadline:
                raise RtspError(f"{self.url}: no answer to {method} in {self._timeout_s:g} s")
            self._pending += self.receive()

    def _send(self, method: str, uri: str, headers: dict[str, str]) -> None:
        assert self._sock is not None
        self._sequence += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._sequence}", f"User-Agent: {USER_AGENT}"]
        if self._credentials is not None and (auth := self._credentials.header(method, uri)):
            lines.append(f"Authorization: {auth}")
        if self._session is not None:
            lines.append(f"Session: {self._session}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except BlockingIOError:  # a non-blocking session's full send buffer: the caller decides
            raise
        except OSError as exc:
            raise RtspError(f"{self.url}: {exc.strerror or exc}") from None

    def _parse_response(self) -> Response | None:
        """The next RTSP response in the buffer (interleaved data before it is skipped)."""
        buffer = self._pending
        while buffer.startswith(b"$"):
            frame_end = _interleaved_end(buffer, 0)
            if frame_end is None:
                return None
            buffer = self._pending = buffer[frame_end:]
        header_end = buffer.find(b"\r\n\r\n")
        if header_end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise RtspError(f"{self.url}: the answer's header is too long")
            return None
        lines = buffer[:header_end].decode("utf-8", "replace").split("\r\n")
        status = _STATUS_LINE.match(lines[0])
        if status is None:
            raise UnsupportedStream(f"{self.url}: not an RTSP answer: {lines[0][:80]!r}")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int((headers.get("content-length") or ["0"])[0] or 0)
        if length > MAX_BODY_BYTES:
            raise RtspError(f"{self.url}: the answer's body is too long ({length} bytes)")
        body_end = header_end + 4 + length
        if len(buffer) < body_end:
            return None
        self._pending = buffer[body_end:]
        return Response(int(status[1]), status[2], headers, buffer[header_end + 4 : body_end])
