"""Identifiers: camera slugs and prefixed random ids (wire format shared with Heldar)."""

from __future__ import annotations

import re
import unicodedata
import uuid

SLUG_MAX_LEN = 64
SLUG_PATTERN = r"^[a-z0-9_]{1,64}$"
SLUG_RULE = "must match [a-z0-9_]{1,64} (lower-case letters, digits, underscore)"
_SLUG = re.compile(SLUG_PATTERN)
_NON_SLUG_RUN = re.compile(r"[^a-z0-9]+")
FALLBACK_SLUG = "camera"

AI_TASK_PREFIX = "ai_"
SCHEDULE_PREFIX = "snsch_"
SNAPSHOT_PREFIX = "snap_"
DETECTION_PREFIX = "det_"


def is_slug(value: str) -> bool:
    return bool(_SLUG.match(value))


def slugify(name: str) -> str:
    """Derive a slug from a display name: ASCII letters and digits, other runs become ``_``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG_RUN.sub("_", ascii_name.lower()).strip("_")
    return slug[:SLUG_MAX_LEN].rstrip("_") or FALLBACK_SLUG


def with_suffix(slug: str, n: int) -> str:
    """``slug`` with numeric suffix ``_n``, shortened so the result stays a valid slug."""
    suffix = f"_{n}"
    return slug[: SLUG_MAX_LEN - len(suffix)].rstrip("_") + suffix


def new_id(prefix: str) -> str:
    """A new random id, e.g. ``ai_<32 hex>``."""
    return f"{prefix}{uuid.uuid4().hex}"
