#!/usr/bin/python3
"""A real RTSP test camera on loopback: GStreamer's RTSP server with a live, moving H.264 pattern.

Run it with the system interpreter (the GObject bindings live there, not in the venv)::

    /usr/bin/python3 scripts/test_camera.py --port 0 --path /cam --path /cam2

Each ``--path`` is an independent mount with its own *shared* pipeline, like a real camera: readers
join mid-GOP and wait for the next IDR, and the pipeline runs while at least one reader is connected
(it starts with the first reader and stops after the last one leaves).

Protocol with the parent process (``tests/support/rtsp_camera.py``):

- stdout carries exactly one line per mount, in the order the ``--path`` options were given,
  once the server listens: ``READY rtsp://127.0.0.1:<port><path>``. Nothing else goes to stdout.
- stderr carries errors and warnings.
- SIGTERM and SIGINT stop the server; the exit code is then 0. With ``--exit-on-stdin-eof`` the
  server also stops when its stdin reaches end of file, so it never outlives a parent that died
  without cleaning up (the parent holds the write end of a pipe and never writes to it).
- Exit code 2 for bad options (a non-loopback ``--host`` included), 1 when the server cannot start.

Choices that matter (facts learnt with GStreamer 1.22 and ffmpeg 5.1, see SPEC §8):

- ``x264enc tune=zerolatency`` turns on sliced threads, and ffmpeg's parser then splits each IDR and
  conceals half of it, so ``sliced-threads=false``.
- ``video/x-h264,profile=main`` after the encoder, or it negotiates constrained baseline.
- ``videotestsrc`` claims to be seekable and ffmpeg's PLAY carries ``Range: npt=0.000-``, so each
  new reader would make the server seek the shared pipeline. A pad probe on the encoder's src pad
  answers the SEEKING query as "not seekable".
- The server binds only the given loopback address, port 0 lets the kernel pick a free port, and the
  port actually bound is read back with ``get_bound_port()`` after ``attach()`` (no race).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

DEFAULT_PATH = "/cam"
# Mount paths end up in a URL and in a gst-launch description, so keep them to a safe alphabet.
MOUNT_PATH_RE = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
# RTP/RTCP port pairs for UDP readers come from this range on the loopback host; a port that is
# taken by another process is skipped.
UDP_PORT_MIN = 40000
UDP_PORT_MAX = 59999
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
# videotestsrc patterns that change every frame (most others are still pictures).
MOVING_PATTERNS = ("ball", "snow")
EXIT_START_FAILED = 1


def log(message: str) -> None:
    print(f"test_camera: {message}", file=sys.stderr, flush=True)


def loopback_host(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address") from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(
            f"{value} is not a loopback address; the test camera only binds loopback "
            "(127.0.0.0/8 or ::1)"
        )
    return value


def mount_path(value: str) -> str:
    if not MOUNT_PATH_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a mount path like /cam (letters, digits, '.', '_', '-' after '/')"
        )
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the kernel pick a free port")
    parser.add_argument(
        "--path",
        dest="paths",
        type=mount_path,
        action="append",
        help=f"mount path; repeat for several independent mounts (default {DEFAULT_PATH})",
    )
    parser.add_argument("--width", type=positive_int, default=640)
    parser.add_argument("--height", type=positive_int, default=360)
    parser.add_argument("--fps", type=positive_int, default=15)
    parser.add_argument(
        "--gop", type=positive_int, default=None, help="keyframe interval in frames (default 2*fps)"
    )
    parser.add_argument(
        "--bitrate-kbps", type=positive_int, default=None, help="x264 bitrate (default x264's)"
    )
    parser.add_argument("--preset", default="ultrafast", choices=X264_PRESETS)
    parser.add_argument(
        "--codec", default="h264", choices=("h264", "h265"), help="x264enc or x265enc"
    )
    parser.add_argument(
        "--pattern",
        default="ball",
        choices=MOVING_PATTERNS,
        help="videotestsrc pattern (ball: a moving ball; snow: noise, costly to encode)",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin reaches end of file (the parent died)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range 0..65535")
    args.paths = args.paths or [DEFAULT_PATH]
    if len(set(args.paths)) != len(args.paths):
        parser.error("--path values must be distinct")
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even (4:2:0 video)")
    if args.gop is None:
        args.gop = 2 * args.fps
    return args


def has_element(name: str) -> bool:
    return Gst.ElementFactory.find(name) is not None


def launch_description(args: argparse.Namespace, path: str) -> str:
    """The gst-launch description of one mount's pipeline (payloader named pay0, encoder enc)."""
    raw_caps = f"video/x-raw,format=I420,width={args.width},height={args.height}"
    raw_caps += f",framerate={args.fps}/1"
    parts = [f"videotestsrc is-live=true pattern={args.pattern}", raw_caps]
    # The pango overlays are optional: a visible wall clock and running time help a human looking
    # at a snapshot, but the camera works without them.
    if has_element("clockoverlay"):
        parts.append(
            f'clockoverlay text="{path}" time-format="%H:%M:%S" halignment=left valignment=top'
            ' shaded-background=true font-desc="Sans 14"'
        )
    if has_element("timeoverlay"):
        parts.append(
            "timeoverlay time-mode=running-time halignment=right valignment=bottom"
            ' shaded-background=true font-desc="Sans 14"'
        )
    if args.codec == "h265":
        # x265enc: zerolatency keeps B-frames out; Main profile caps like the H.264 branch.
        encoder = (
            f"x265enc name=enc tune=zerolatency speed-preset={args.preset} key-int-max={args.gop}"
        )
        caps, payloader = "video/x-h265,profile=main", "rtph265pay"
    else:
        encoder = (
            "x264enc name=enc tune=zerolatency sliced-threads=false cabac=true"
            f" speed-preset={args.preset} key-int-max={args.gop}"
        )
        caps, payloader = "video/x-h264,profile=main", "rtph264pay"
    if args.bitrate_kbps is not None:
        encoder += f" bitrate={args.bitrate_kbps}"
    parts += [encoder, caps, f"{payloader} name=pay0 pt=96 config-interval=-1"]
    return "( " + " ! ".join(parts) + " )"


def refuse_seeking(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    """Answer SEEKING queries as "not seekable" so a new reader never seeks the shared pipeline."""
    query = info.get_query()
    if query is None or query.type != Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.OK
    seekable = query.parse_seeking()[1]
    if seekable:
        # A fresh SEEKING query says "not seekable" until someone answers it; should one arrive
        # already answered, fail it instead (PyGObject hands us a non-writable reference).
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.HANDLED


class Camera:
    """The RTSP server with one shared factory per mount, plus the media it has prepared."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.host)
        self.server.set_service(str(args.port))
        self.medias: list[GstRtspServer.RTSPMedia] = []
        mounts = self.server.get_mount_points()
        for path in args.paths:
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(launch_description(args, path))
            factory.set_shared(True)
            factory.set_address_pool(self.udp_pool())
            factory.connect("media-configure", self.on_media_configure)
            mounts.add_factory(path, factory)

    def udp_pool(self) -> GstRtspServer.RTSPAddressPool:
        """Unicast UDP ports on the loopback host (without a pool they bind the ANY address)."""
        pool = GstRtspServer.RTSPAddressPool()
        if not pool.add_range(self.args.host, self.args.host, UDP_PORT_MIN, UDP_PORT_MAX, 0):
            raise RuntimeError(f"cannot make a UDP address pool on {self.args.host}")
        return pool

    def on_media_configure(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        encoder = media.get_element().get_by_name("enc")
        encoder.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, refuse_seeking)
        self.medias.append(media)
        media.connect("unprepared", self.on_media_unprepared)

    def on_media_unprepared(self, media: GstRtspServer.RTSPMedia) -> None:
        if media in self.medias:
            self.medias.remove(media)

    def start(self) -> bool:
        if self.server.attach(None) == 0:
            log(f"cannot listen on {self.args.host}:{self.args.port} (port in use?)")
            return False
        port = self.server.get_bound_port()
        if port <= 0:
            log("the server did not report a bound port")
            return False
        host = f"[{self.args.host}]" if ":" in self.args.host else self.args.host
        for path in self.args.paths:
            print(f"READY rtsp://{host}:{port}{path}", flush=True)
        return True

    def stop(self, *_args: Any) -> bool:
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    def on_stdin(self, _fd: int, _condition: GLib.IOCondition) -> bool:
        # The parent never writes, so readable means end of file (or an error): it is gone.
        data = os.read(sys.stdin.fileno(), 4096)
        if data:
            return GLib.SOURCE_CONTINUE
        log("stdin closed, stopping")
        return self.stop()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self.stop)
        if self.args.exit_on_stdin_eof:
            GLib.io_add_watch(
                sys.stdin.fileno(),
                GLib.PRIORITY_DEFAULT,
                GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                self.on_stdin,
            )
        if not self.start():
            return EXIT_START_FAILED
        self.loop.run()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        # Close client connections first, then take every pipeline down to NULL, so no streaming
        # thread calls back into Python while the interpreter finalises.
        self.server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
        for media in list(self.medias):
            media.unprepare()
        self.medias.clear()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    if "GST_DEBUG" not in os.environ:
        # GStreamer's own ERROR lines (e.g. "can't prepare media" and why) are the only trace of a
        # pipeline that fails when a reader connects; WARNING is noisy in normal operation.
        Gst.debug_set_default_threshold(Gst.DebugLevel.ERROR)
        Gst.debug_set_colored(False)
    encoder, payloader = (
        ("x265enc", "rtph265pay") if args.codec == "h265" else ("x264enc", "rtph264pay")
    )
    missing = [name for name in ("videotestsrc", encoder, payloader) if not has_element(name)]
    if missing:
        log(f"missing GStreamer elements: {', '.join(missing)} (install gstreamer1.0-plugins-*)")
        return EXIT_START_FAILED
    return Camera(args).run()


if __name__ == "__main__":
    sys.exit(main())
