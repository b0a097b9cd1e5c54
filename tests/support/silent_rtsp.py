"""An RTSP "camera" on loopback that never sends video, for stalled-stream tests.

Two behaviours, both seen on real cameras:

- ``"mute"``: accepts TCP connections, reads and discards what the client sends, never answers.
- ``"no-media"`` (default): answers the RTSP handshake like a camera (OPTIONS, DESCRIBE with a
  640x360 H.264 SDP, SETUP over TCP interleaved, PLAY, keep-alives, TEARDOWN), then never sends a
  single RTP packet. UDP transports get ``461 Unsupported Transport``, so clients fall back to TCP.

The server runs on a daemon thread with a selector and a wake-up socket pair; ``stop()`` closes
every connection and joins the thread.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Literal

from tests.support.service import Service

SilenceMode = Literal["mute", "no-media"]

# SPS/PPS of a 640x360 Main-profile stream from scripts/test_camera.py, so a client that trusts the
# SDP knows the size and waits for frames that never come.
_SPROP = "Z01AFtoCgL/lwFqDAwNSgAAAAwCAAAAPR4sXUA==,aO48gA=="
_SESSION_ID = "5117e47a"
_RECV_BYTES = 65536
_SEND_TIMEOUT_S = 2.0
_JOIN_TIMEOUT_S = 5.0


class SilentRtspServer(Service):
    """A loopback TCP server that looks like an RTSP camera and sends no media."""

    def __init__(
        self, *, mode: SilenceMode = "no-media", host: str = "127.0.0.1", path: str = "/silent"
    ) -> None:
        self.mode: SilenceMode = mode
        self.host = host
        self.path = path
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections_accepted = 0
        self._methods: list[str] = []

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the silent server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}{self.path}"

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._connections_accepted

    @property
    def methods_seen(self) -> tuple[str, ...]:
        """RTSP methods received, in order (empty in "mute" mode, which does not parse)."""
        with self._lock:
            return tuple(self._methods)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the silent server is already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen()
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="silent-rtsp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and the listener; idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None and self._wake_writer is not None:
            self._wake_writer.send(b"x")
            thread.join(_JOIN_TIMEOUT_S)
        for sock in (self._wake_writer, self._wake_reader, self._listener):
            if sock is not None:
                sock.close()
        self._wake_writer = self._wake_reader = None
        # The port is remembered, so url and port can still be read after stop.

    # -- server thread --------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None and self._wake_reader is not None
        buffers: dict[socket.socket, bytearray] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            try:
                while True:
                    for key, _events in selector.select():
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if sock is self._wake_reader:
                            return
                        if sock is self._listener:
                            self._accept(selector, buffers)
                        else:
                            self._receive(selector, buffers, sock)
            finally:
                for conn in buffers:
                    conn.close()

    def _accept(
        self, selector: selectors.BaseSelector, buffers: dict[socket.socket, bytearray]
    ) -> None:
        assert self._listener is not None
        try:
            conn, _address = self._listener.accept()
        except BlockingIOError:
            return
        conn.settimeout(_SEND_TIMEOUT_S)
        buffers[conn] = bytearray()
        selector.register(conn, selectors.EVENT_READ)
        with self._lock:
            self._connections_accepted += 1

    def _receive(
        self,
        selector: selectors.BaseSelector,
        buffers: dict[socket.socket, bytearray],
        conn: socket.socket,
    ) -> None:
        try:
            data = conn.recv(_RECV_BYTES)
        except OSError:
            data = b""
        if not data:
            selector.unregister(conn)
            del buffers[conn]
            conn.close()
            return
        if self.mode == "mute":
            return
        buffer = buffers[conn]
        buffer += data
        try:
            for request in _take_requests(buffer):
                conn.sendall(self._respond(request))
        except OSError:
            selector.unregister(conn)
            del buffers[conn]
            conn.close()

    def _respond(self, request: str) -> bytes:
        lines = request.split("\r\n")
        method = lines[0].split(" ", 1)[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        with self._lock:
            self._methods.append(method)
        status = "200 OK"
        extra: list[str] = []
        body = ""
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = self._sdp()
            extra += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport.upper():
                status = "461 Unsupported Transport"
            else:
                extra += [
                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
                    f"Session: {_SESSION_ID};timeout=60",
                ]
        elif method == "PLAY":
            extra += [f"Session: {_SESSION_ID}", "Range: npt=now-"]
        elif "session" in headers:
            extra.append(f"Session: {_SESSION_ID}")
        head = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}", *extra]
        head.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(head) + "\r\n\r\n" + body).encode()

    def _sdp(self) -> str:
        return "\r\n".join(
            [
                "v=0",
                f"o=- 0 0 IN IP4 {self.host}",
                "s=Silent test camera",
                f"c=IN IP4 {self.host}",
                "t=0 0",
                "a=control:*",
                "a=range:npt=now-",
                "m=video 0 RTP/AVP 96",
                "a=rtpmap:96 H264/90000",
                "a=framerate:15",
                "a=fmtp:96 packetization-mode=1;profile-level-id=4d4016;"
                f"sprop-parameter-sets={_SPROP}",
                "a=control:stream=0",
                "",
            ]
        )


def _take_requests(buffer: bytearray) -> list[str]:
    """Remove complete RTSP requests from ``buffer`` and return their heads.

    Interleaved binary frames (``$``, channel, 16-bit length, payload: the client's RTCP) are
    dropped.
    """
    requests: list[str] = []
    while buffer:
        if buffer[0] == ord("$"):
            if len(buffer) < 4:
                break
            frame_end = 4 + int.from_bytes(buffer[2:4], "big")
            if len(buffer) < frame_end:
                break
            del buffer[:frame_end]
            continue
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            break
        head = buffer[:head_end].decode("latin-1")
        content_length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                content_length = int(value.strip() or 0)
        request_end = head_end + 4 + content_length
        if len(buffer) < request_end:
            break
        del buffer[:request_end]
        requests.append(head)
    return requests
