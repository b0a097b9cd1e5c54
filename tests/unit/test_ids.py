from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.ids import is_slug, new_id, slugify, with_suffix


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Front Door", "front_door"),
        ("  Lobby -- Cam #2 ", "lobby_cam_2"),
        ("Café Entrée", "cafe_entree"),
        ("../../etc/passwd", "etc_passwd"),
        ("超市", "camera"),
        ("___", "camera"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


@given(st.text(max_size=300))
def test_slugify_always_yields_a_slug(name: str) -> None:
    assert is_slug(slugify(name))


@given(st.text(max_size=300), st.integers(min_value=2, max_value=10**6))
def test_suffixed_slugs_stay_valid(name: str, n: int) -> None:
    suffixed = with_suffix(slugify(name), n)
    assert is_slug(suffixed)
    assert suffixed.endswith(f"_{n}")


@pytest.mark.parametrize("bad", ["", "A", "a/b", "..", "a-b", "x" * 65, "a b"])
def test_is_slug_rejects(bad: str) -> None:
    assert not is_slug(bad)


def test_new_id_prefix_and_entropy() -> None:
    ids = {new_id("ai_") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("ai_") and len(i) == 35 for i in ids)
