"""Credential redaction for every string that leaves the process.

Invariant: text passed through :func:`redact` contains no URL user info and no
``password=``-style query values. Redaction is idempotent, so layers may apply it
again without harm (log formatter, error handler, stderr ring buffer).
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@  -> scheme://***@ . Userinfo is everything up to the last '@'
# before the authority ends ('/', whitespace, quote), so a raw '@' inside a
# password that the operator forgot to percent-encode is covered too.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^\s/?#'\"<>]*@)",
)
# Vendor HTTP endpoints often take credentials as query parameters.
_QUERY_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|pass|token|auth)=)(?P<value>[^&\s'\"#]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Return ``text`` with credentials in URLs (user info, secret query values) masked."""
    if "@" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    if "=" in text:
        text = _QUERY_SECRET.sub(_mask_query_value, text)
    return text


def _mask_userinfo(match: re.Match[str]) -> str:
    return f"{match['scheme']}{MASK}@"


def _mask_query_value(match: re.Match[str]) -> str:
    return f"{match['key']}{MASK}"
