"""Camera stream URLs (SPEC §4): vendor templates, credentials, validation, masking.

Invariants:
- a :class:`StreamUrl` renders masked (``str``, ``repr``, f-strings, logs); only
  :meth:`StreamUrl.reveal` gives the credentials, and only the ffmpeg argv builder calls it;
- user and password are percent-encoded (RFC 3986 unreserved characters pass);
- IPv6 hosts are bracketed;
- ``file://`` sources must resolve inside the media directory.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from heldar.redaction import MASK, redact

ALLOWED_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "file"})
NETWORK_SCHEMES = ALLOWED_SCHEMES - {"file"}
MAX_URL_LENGTH = 2048
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


class Vendor(StrEnum):
    GENERIC = "generic"
    HIKVISION = "hikvision"
    DAHUA = "dahua"


class Profile(StrEnum):
    MAIN = "main"
    SUB = "sub"


class UrlError(ValueError):
    """A URL or address breaks a rule; the message says which (never with credentials)."""


@dataclass(frozen=True, slots=True)
class StreamUrl:
    """A stream URL that may carry credentials; masked wherever it is printed."""

    _raw: str

    def reveal(self) -> str:
        """The URL with credentials, for the ffmpeg argv only."""
        return self._raw

    @property
    def masked(self) -> str:
        return redact(self._raw)

    @property
    def scheme(self) -> str:
        return urlsplit(self._raw).scheme.lower()

    @property
    def is_rtsp(self) -> bool:
        return self.scheme in ("rtsp", "rtsps")

    @property
    def file_path(self) -> Path | None:
        if self.scheme != "file":
            return None
        return Path(unquote(urlsplit(self._raw).path))

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"StreamUrl({self.masked!r})"


def format_host(address: str) -> str:
    """``address`` ready for a URL authority: IPv6 literals get brackets."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def validate_address(address: str) -> str:
    """Return a host name, IPv4 or IPv6 address, stripped; raise UrlError otherwise."""
    value = address.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if not value:
        raise UrlError("must be a host name or IP address, not empty")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise UrlError(
            "must be a host name or IP address (no scheme, path, port or credentials); "
            "put a full URL in main_stream_url instead"
        )
    return value


def template_url(
    vendor: Vendor, address: str, rtsp_port: int, channel: int, profile: Profile
) -> str | None:
    """The vendor's RTSP URL without credentials, or None when the vendor has no template."""
    authority = f"{format_host(address)}:{rtsp_port}"
    if vendor is Vendor.HIKVISION:
        suffix = "01" if profile is Profile.MAIN else "02"
        return f"rtsp://{authority}/Streaming/Channels/{channel}{suffix}"
    if vendor is Vendor.DAHUA:
        subtype = 0 if profile is Profile.MAIN else 1
        return f"rtsp://{authority}/cam/realmonitor?channel={channel}&subtype={subtype}"
    return None


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """Add percent-encoded credentials to a network URL that carries no user info."""
    parts = urlsplit(url)
    if not username or parts.scheme.lower() not in NETWORK_SCHEMES or "@" in parts.netloc:
        return url
    userinfo = quote(username, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    prefix = f"{parts.scheme}://"
    return prefix + userinfo + "@" + url[len(prefix) :]


def validate_explicit_url(url: str, media_dir: Path) -> str:
    """Check an operator-given stream URL; return it stripped, or raise UrlError."""
    value = url.strip()
    if len(value) > MAX_URL_LENGTH:
        raise UrlError(f"must be at most {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(value):
        raise UrlError("must not contain spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"is not a valid URL ({redact(str(exc))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        allowed = ", ".join(sorted(ALLOWED_SCHEMES))
        shown = f"'{scheme}'" if scheme else "none"
        raise UrlError(f"scheme {shown} is not allowed; use one of: {allowed}")
    if scheme == "file":
        _check_media_path(parts.netloc, parts.path, media_dir)
        return value
    if not parts.hostname:
        raise UrlError(f"a {scheme} URL needs a host, e.g. {scheme}://192.0.2.10/stream")
    if port is not None and not 1 <= port <= 65535:
        raise UrlError("port must be between 1 and 65535")
    if parts.username == MASK or parts.password == MASK:
        raise UrlError(
            "contains masked credentials ('***'); send the real user and password, or send "
            "the masked URL back unchanged to keep the stored ones"
        )
    return value


def _check_media_path(netloc: str, path: str, media_dir: Path) -> None:
    if netloc not in ("", "localhost"):
        raise UrlError("a file URL must be local: file:///absolute/path under the media directory")
    if not path:
        raise UrlError("a file URL needs a path")
    root = media_dir.resolve()
    target = Path(unquote(path)).resolve()
    if not target.is_relative_to(root):
        raise UrlError(f"file sources must be under the media directory {root}")


def stream_url(
    explicit: str | None,
    vendor: Vendor,
    address: str | None,
    rtsp_port: int,
    channel: int,
    profile: Profile,
    username: str | None,
    password: str | None,
) -> StreamUrl | None:
    """A profile's own URL: the explicit one (plus camera credentials), else the template."""
    if explicit:
        return StreamUrl(with_credentials(explicit, username, password))
    if address:
        base = template_url(vendor, address, rtsp_port, channel, profile)
        if base is not None:
            return StreamUrl(with_credentials(base, username, password))
    return None
