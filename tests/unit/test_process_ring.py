"""StderrRing: the redacted, bounded stderr tail of heldar.media.process."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.media.process import TRUNCATION_MARK, StderrRing

PASSWORD = "Zq9Xw7Vb"  # upper case and digits: the filler below never contains a fragment of it
URL = f"rtsp://admin:{PASSWORD}@127.0.0.1:554/x"
LIMIT_BYTES = 256  # a stored line is at most 128 bytes


def password_fragments(text: str) -> list[str]:
    """Every piece of PASSWORD of 3 or more characters that occurs in ``text``."""
    return [
        PASSWORD[i:j]
        for i in range(len(PASSWORD))
        for j in range(i + 3, len(PASSWORD) + 1)
        if PASSWORD[i:j] in text
    ]


def fed(*chunks: bytes, limit_bytes: int = LIMIT_BYTES, close: bool = True) -> str:
    ring = StderrRing(limit_bytes)
    for chunk in chunks:
        ring.feed(chunk)
    if close:
        ring.close()
    return ring.text()


def test_lines_are_redacted_and_the_oldest_go_first() -> None:
    lines = [f"line {i} {URL} failed" for i in range(50)]
    tail = fed("\n".join(lines).encode() + b"\n")
    assert tail.endswith("line 49 rtsp://***@127.0.0.1:554/x failed")
    assert "line 0 " not in tail
    assert len(tail.encode()) <= LIMIT_BYTES
    assert PASSWORD not in tail


def test_a_url_split_across_feeds_is_still_redacted() -> None:
    data = f"error {URL}\n".encode()
    for cut in range(len(data)):
        ring = StderrRing(LIMIT_BYTES)
        ring.feed(data[:cut])
        assert password_fragments(ring.text()) == []  # the partial line is never shown
        ring.feed(data[cut:])
        assert ring.text() == "error rtsp://***@127.0.0.1:554/x"


def test_progress_lines_replace_each_other_like_on_a_terminal() -> None:
    progress = b"".join(b"frame=%5d fps=25\r" % i for i in range(100))
    tail = fed(b"[rtsp @ 0x1] " + URL.encode() + b": 401 Unauthorized\n", progress)
    assert tail == "[rtsp @ 0x1] rtsp://***@127.0.0.1:554/x: 401 Unauthorized\nframe=   99 fps=25"


def test_a_progress_line_ended_by_crlf_is_kept_even_when_the_lf_comes_later() -> None:
    assert fed(b"frame=1\r", b"\nnext\n") == "frame=1\nnext"
    assert fed(b"frame=1\r\nnext\n") == "frame=1\nnext"


def test_a_line_longer_than_the_limit_is_cut_before_the_token_that_crosses_the_cut() -> None:
    filler = "a " * 50  # 100 characters, so the URL crosses the cut at 128 bytes
    tail = fed(f"{filler}{URL} {filler}\nafter\n".encode())
    first, second = tail.split("\n")
    assert first == filler.rstrip() + TRUNCATION_MARK
    assert second == "after"
    assert password_fragments(tail) == []


def test_an_overlong_line_is_bounded_before_it_ends() -> None:
    ring = StderrRing(LIMIT_BYTES)
    ring.feed(b"word " * 10_000)  # no line break yet
    # 122 characters and the mark make 128 bytes; the cut word "wo" is dropped
    assert ring.text() == ("word " * 24).rstrip() + TRUNCATION_MARK
    ring.feed(URL.encode() * 10 + b" tail of the same line\n")  # skipped up to its line break
    ring.feed(b"next\n")
    assert ring.text().endswith(TRUNCATION_MARK + "\nnext")


def test_multibyte_text_split_anywhere_counts_in_bytes() -> None:
    data = ("ünïcödé " * 100 + "\n").encode()
    for cut in (1, 2, 3, 7, 100):
        tail = fed(data[:cut], data[cut:])
        assert len(tail.encode()) <= LIMIT_BYTES
        assert tail.endswith(TRUNCATION_MARK)
        assert "\ufffd" not in tail


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert fed(b"bad \xff\xfe byte\n") == "bad \ufffd\ufffd byte"


def test_an_unterminated_last_line_counts_at_close() -> None:
    assert fed(b"first\nlast", close=False) == "first"
    assert fed(b"first\nlast") == "first\nlast"


def test_the_limit_has_a_floor() -> None:
    with pytest.raises(ValueError, match="limit_bytes"):
        StderrRing(255)


_SEGMENTS = st.one_of(
    st.text(alphabet="abcdef =/:.", max_size=40),
    # A URL glued to a preceding letter or digit ("xrtsp://...") is not recognised by redact():
    # that is redaction's rule, not the ring's, so URLs start after a separator here.
    st.just(f" {URL}"),
    st.just(f" url='{URL}'"),
    st.just(f" https://cam.local/snap.cgi?user=admin&password={PASSWORD}"),
    st.just("\n"),
    st.just("\r"),
    st.just("\r\n"),
    st.just("é"),
    st.integers(min_value=1, max_value=600).map(lambda n: "a" * n),
)


@given(
    segments=st.lists(_SEGMENTS, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    limit_bytes=st.sampled_from([256, 300, 1024]),
)
def test_no_password_fragment_and_always_bounded(
    segments: list[str], cuts: list[int], limit_bytes: int
) -> None:
    data = "".join(segments).encode()
    ring = StderrRing(limit_bytes)
    start = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        ring.feed(data[start:cut])
        start = cut
        tail = ring.text()
        assert password_fragments(tail) == []
        assert len(tail.encode()) <= limit_bytes
    ring.close()
    tail = ring.text()
    assert password_fragments(tail) == []
    assert len(tail.encode()) <= limit_bytes
