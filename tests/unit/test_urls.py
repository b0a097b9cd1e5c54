"""SPEC §4: vendor templates, percent-encoding, IPv6, overrides, validation and masking."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.media.ffmpeg import input_args
from heldar.media.urls import (
    Profile,
    StreamUrl,
    UrlError,
    Vendor,
    stream_url,
    template_url,
    validate_address,
    validate_explicit_url,
    with_credentials,
)
from heldar.redaction import redact

MEDIA = Path("/srv/heldar/media")


@pytest.mark.parametrize(
    ("vendor", "profile", "expected"),
    [
        (Vendor.HIKVISION, Profile.MAIN, "rtsp://192.0.2.7:554/Streaming/Channels/101"),
        (Vendor.HIKVISION, Profile.SUB, "rtsp://192.0.2.7:554/Streaming/Channels/102"),
        (Vendor.DAHUA, Profile.MAIN, "rtsp://192.0.2.7:554/cam/realmonitor?channel=1&subtype=0"),
        (Vendor.DAHUA, Profile.SUB, "rtsp://192.0.2.7:554/cam/realmonitor?channel=1&subtype=1"),
        (Vendor.GENERIC, Profile.MAIN, None),
    ],
)
def test_vendor_templates(vendor: Vendor, profile: Profile, expected: str | None) -> None:
    assert template_url(vendor, "192.0.2.7", 554, 1, profile) == expected


def test_hikvision_channel_and_port() -> None:
    url = template_url(Vendor.HIKVISION, "cam.example", 8554, 12, Profile.SUB)
    assert url == "rtsp://cam.example:8554/Streaming/Channels/1202"


def test_ipv6_hosts_are_bracketed() -> None:
    url = template_url(Vendor.DAHUA, "2001:db8::5", 554, 3, Profile.MAIN)
    assert url == "rtsp://[2001:db8::5]:554/cam/realmonitor?channel=3&subtype=0"
    assert urlsplit(url).hostname == "2001:db8::5"


def test_special_characters_in_credentials_are_percent_encoded() -> None:
    password = "p@ss:w/rd#?% &é~"
    built = stream_url(
        None, Vendor.HIKVISION, "192.0.2.7", 554, 1, Profile.MAIN, "ad min", password
    )
    assert built is not None
    parts = urlsplit(built.reveal())
    assert parts.hostname == "192.0.2.7"
    assert parts.port == 554
    assert unquote(parts.username or "") == "ad min"
    assert unquote(parts.password or "") == password
    assert "p%40ss%3Aw%2Frd%23%3F%25%20%26%C3%A9~" in built.reveal()  # '~' is unreserved


def test_explicit_url_wins_and_gets_camera_credentials() -> None:
    built = stream_url(
        "rtsp://192.0.2.9:8554/live",
        Vendor.HIKVISION,
        "192.0.2.7",
        554,
        1,
        Profile.MAIN,
        "u",
        "p w",
    )
    assert built is not None
    assert built.reveal() == "rtsp://u:p%20w@192.0.2.9:8554/live"


def test_explicit_url_with_user_info_is_used_as_given() -> None:
    assert with_credentials("rtsp://a:b@h/x", "u", "p") == "rtsp://a:b@h/x"


def test_credentials_not_added_to_file_urls_or_without_username() -> None:
    assert with_credentials("file:///srv/heldar/media/a.mp4", "u", "p").startswith("file:///srv")
    assert with_credentials("rtsp://h/x", None, "p") == "rtsp://h/x"
    assert with_credentials("rtsp://h/x", "u", None) == "rtsp://u@h/x"


def test_no_url_for_generic_without_explicit() -> None:
    assert stream_url(None, Vendor.GENERIC, "192.0.2.7", 554, 1, Profile.MAIN, "u", "p") is None
    assert stream_url(None, Vendor.HIKVISION, None, 554, 1, Profile.MAIN, "u", "p") is None


def test_stream_url_renders_masked_everywhere() -> None:
    url = StreamUrl("rtsp://admin:s3cret@192.0.2.7:554/x")
    for text in (str(url), repr(url), f"{url}", url.masked, repr([url])):
        assert "s3cret" not in text
        assert "admin" not in text
    assert url.reveal() == "rtsp://admin:s3cret@192.0.2.7:554/x"
    assert str(url) == "rtsp://***@192.0.2.7:554/x"


def test_ffmpeg_argv_reveals_only_in_the_input_argument() -> None:
    args = input_args(StreamUrl("rtsp://admin:s3cret@192.0.2.7/x"), io_timeout_s=5)
    assert args[:6] == [
        "-rtsp_transport", "tcp", "-timeout", "5000000", "-probesize", "32"
    ]  # fmt: skip
    assert args[-2:] == ["-i", "rtsp://admin:s3cret@192.0.2.7/x"]
    file_args = input_args(StreamUrl("file:///srv/heldar/media/a%20b.mp4"))
    assert file_args == ["-re", "-stream_loop", "-1", "-i", "/srv/heldar/media/a b.mp4"]


@pytest.mark.parametrize(
    "stderr_line",
    [
        "[rtsp @ 0x55d] method DESCRIBE failed: 401 Unauthorized rtsp://admin:s3cret@10.1.2.3:554/x",
        "Input #0, rtsp, from 'rtsp://admin:s3cret@10.1.2.3:554/Streaming/Channels/101':",
        "rtsp://admin:s3cret@[2001:db8::5]:554/live: Connection refused",
        "Error opening input file http://cam/snap.cgi?user=admin&password=s3cret.",
        "rtsp://admin:p@s3cret@10.1.2.3/x: Invalid data",  # raw '@' in the password
        "'rtsp://admin:s3cret@10.1.2.3/x'",
    ],
)
def test_masking_inside_ffmpeg_stderr(stderr_line: str) -> None:
    masked = redact(stderr_line)
    assert "s3cret" not in masked
    assert redact(masked) == masked  # idempotent


@given(
    user=st.text(min_size=1, max_size=20),
    password=st.text(min_size=4, max_size=30).filter(lambda p: p.strip() == p and "***" not in p),
)
def test_built_urls_never_leak_credentials_when_masked(user: str, password: str) -> None:
    built = stream_url(None, Vendor.HIKVISION, "2001:db8::1", 554, 1, Profile.SUB, user, password)
    assert built is not None
    masked = built.masked
    assert masked == "rtsp://***@[2001:db8::1]:554/Streaming/Channels/102"
    # and the revealed URL round-trips the exact credentials
    parts = urlsplit(built.reveal())
    assert unquote(parts.password or "") == password
    assert unquote(parts.username or "") == user


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://192.0.2.7/x", "scheme 'ftp' is not allowed"),
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("192.0.2.7/stream", "scheme none is not allowed"),
        ("rtsp:///nohost", "needs a host"),
        ("rtsp://192.0.2.7:70000/x", "valid URL"),
        ("rtsp://192.0.2.7/a b", "spaces"),
        ("rtsp://***@192.0.2.7/x", "masked credentials"),
        ("file:///etc/passwd", "under the media directory"),
        ("file:///srv/heldar/media/../secret.mp4", "under the media directory"),
        ("file://otherhost/srv/heldar/media/a.mp4", "must be local"),
    ],
)
def test_explicit_url_rules(url: str, rule: str) -> None:
    with pytest.raises(UrlError, match=rule):
        validate_explicit_url(url, MEDIA)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://192.0.2.7:554/Streaming/Channels/101",
        "rtsps://cam.example/live",
        "http://[2001:db8::1]:8080/video.mjpg",
        "https://user:pw@cam.example/stream",
        "file:///srv/heldar/media/clips/demo.mp4",
    ],
)
def test_explicit_url_accepted(url: str) -> None:
    assert validate_explicit_url(f"  {url} ", MEDIA) == url


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("cam-01.site.example", "cam-01.site.example"),
    ],
)
def test_addresses(address: str, expected: str) -> None:
    assert validate_address(address) == expected


@pytest.mark.parametrize(
    "address", ["", "rtsp://192.0.2.7", "192.0.2.7/x", "admin@cam", "-bad.example", "a b"]
)
def test_bad_addresses(address: str) -> None:
    with pytest.raises(UrlError):
        validate_address(address)
