"""The worker's analysers on synthesised frames (real numpy and OpenCV, no network)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.worker.analysers import (
    ANALYSERS,
    AnalyserConfigError,
    Detection,
    FrameDecodeError,
    MotionAnalyser,
    MotionConfig,
    PersonAnalyser,
    UnknownTaskType,
    _fit_extent,
    build_analyser,
    decode_gray,
    motion_confidence,
    normalise_box,
    svm_confidence,
    svm_weight,
)

WIDTH_PX, HEIGHT_PX = 640, 360
BACKGROUND = 60
# The 5x5 blur (2 px) and two 3x3 dilations (2 px) widen a motion box by up to 4 working
# pixels per side, 8 frame pixels at 320 of 640; JPEG ringing stays inside that.
BOX_MARGIN_PX = 8


def jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def frame_with_square(
    x_px: int,
    y_px: int,
    size_px: int = 60,
    brightness: int = 220,
    shape: tuple[int, int] = (HEIGHT_PX, WIDTH_PX),
) -> bytes:
    image = np.full((*shape, 3), BACKGROUND, dtype=np.uint8)
    cv2.rectangle(
        image, (x_px, y_px), (x_px + size_px - 1, y_px + size_px - 1), (brightness,) * 3, -1
    )
    return jpeg(image)


def background() -> bytes:
    return jpeg(np.full((HEIGHT_PX, WIDTH_PX, 3), BACKGROUND, dtype=np.uint8))


def assert_box_near(bbox: tuple[float, ...], corners_px: tuple[int, int, int, int]) -> None:
    """``bbox`` holds the pixel box ``(x0, y0, x1, y1)`` and exceeds it by the margin at most."""
    x, y, w, h = bbox
    got = (x * WIDTH_PX, y * HEIGHT_PX, (x + w) * WIDTH_PX, (y + h) * HEIGHT_PX)
    x0, y0, x1, y1 = corners_px
    assert x0 - BOX_MARGIN_PX <= got[0] <= x0 and y0 - BOX_MARGIN_PX <= got[1] <= y0, got
    assert x1 <= got[2] <= x1 + BOX_MARGIN_PX and y1 <= got[3] <= y1 + BOX_MARGIN_PX, got


def assert_well_formed(detection: Detection) -> None:
    x, y, w, h = detection.bbox
    assert 0 <= detection.confidence <= 1
    assert all(0 <= v <= 1 for v in detection.bbox)
    assert w > 0 and h > 0
    assert x + w <= 1 and y + h <= 1


def motion(**config: Any) -> MotionAnalyser:
    return MotionAnalyser.from_config(config)


# Motion ---------------------------------------------------------------------------------


def test_first_frame_only_primes_the_background() -> None:
    analyser = motion()
    assert analyser.analyse(frame_with_square(100, 100)) == []
    assert analyser.analyse(frame_with_square(100, 100)) == []  # nothing moved


def test_motion_box_covers_where_the_square_was_and_is() -> None:
    analyser = motion()
    analyser.analyse(frame_with_square(100, 100))
    [found] = analyser.analyse(frame_with_square(180, 140))
    assert found.label == "motion"
    assert_well_formed(found)
    # The difference holds both squares: x 100..240, y 100..200 of 640x360.
    assert_box_near(found.bbox, (100, 100, 240, 200))
    fraction = found.attributes["changed_fraction"]
    assert found.confidence == pytest.approx(motion_confidence(fraction, 0.005), abs=1e-4)


def test_motion_compares_with_the_previous_frame_not_the_first() -> None:
    analyser = motion()
    analyser.analyse(frame_with_square(100, 100))
    analyser.analyse(frame_with_square(300, 100))
    [found] = analyser.analyse(frame_with_square(400, 100))
    assert_box_near(found.bbox, (300, 100, 460, 160))


@pytest.mark.parametrize(("threshold", "expected"), [(25, 0), (10, 1)])
def test_changes_at_or_below_threshold_are_not_motion(threshold: int, expected: int) -> None:
    analyser = motion(threshold=threshold)
    analyser.analyse(background())
    dim = BACKGROUND + 20  # a 20-level change
    found = analyser.analyse(frame_with_square(100, 100, size_px=120, brightness=dim))
    assert len(found) == expected


def test_min_area_is_the_changed_fraction_of_the_frame() -> None:
    # A 20x20 square appearing: 400 / 230400 px = 0.17 % of the frame.
    small = motion()
    small.analyse(background())
    assert small.analyse(frame_with_square(300, 200, size_px=20)) == []
    sensitive = motion(min_area=0.001)
    sensitive.analyse(background())
    [found] = sensitive.analyse(frame_with_square(300, 200, size_px=20))
    assert found.attributes["changed_fraction"] == pytest.approx(
        400 / (WIDTH_PX * HEIGHT_PX), rel=0.5
    )


def test_a_frame_of_another_size_primes_again() -> None:
    analyser = motion()
    analyser.analyse(frame_with_square(100, 100))
    assert analyser.analyse(frame_with_square(50, 50, shape=(240, 320))) == []
    assert analyser.analyse(frame_with_square(150, 100, shape=(240, 320)))


@given(x=st.integers(-80, WIDTH_PX), y=st.integers(-80, HEIGHT_PX), size=st.integers(20, 200))
def test_motion_boxes_stay_inside_the_frame(x: int, y: int, size: int) -> None:
    analyser = motion(min_area=0.0001)
    analyser.analyse(background())
    for found in analyser.analyse(frame_with_square(x, y, size_px=size)):
        assert_well_formed(found)


def test_motion_confidence_is_one_half_at_the_trigger() -> None:
    assert motion_confidence(0.005, 0.005) == 0.5
    assert motion_confidence(0.015, 0.005) == pytest.approx(0.75)
    assert motion_confidence(0.0, 0.005) == 0.0
    assert motion_confidence(1.0, 0.005) < 1


def test_undecodable_frames_raise_frame_decode_error() -> None:
    analyser = motion()
    for data in (b"", b"not a jpeg", frame_with_square(0, 0)[:200]):
        with pytest.raises(FrameDecodeError):
            analyser.analyse(data)


def test_decode_reduces_big_frames_to_the_working_width() -> None:
    big = frame_with_square(0, 0, shape=(720, 1280))
    assert decode_gray(big, 320).shape == (180, 320)  # decoded at 1/4
    assert decode_gray(big, 500).shape == (281, 500)  # at 1/2, then resized
    assert decode_gray(big, 4000).shape == (720, 1280)  # never upscaled


# Person ---------------------------------------------------------------------------------


def figure_frame() -> bytes:
    """A dark standing figure on grey: not a person, but HOG scores it."""
    image = np.full((HEIGHT_PX, WIDTH_PX, 3), 120, dtype=np.uint8)
    dark = (30, 30, 30)
    cv2.circle(image, (320, 110), 18, dark, -1)
    cv2.rectangle(image, (300, 130), (340, 230), dark, -1)
    cv2.rectangle(image, (302, 230), (318, 310), dark, -1)
    cv2.rectangle(image, (322, 230), (338, 310), dark, -1)
    return jpeg(image)


@pytest.mark.parametrize("min_confidence", [0.2, 0.6])
def test_person_detections_are_well_formed(min_confidence: float) -> None:
    analyser = PersonAnalyser.from_config({"min_confidence": min_confidence})
    found = analyser.analyse(figure_frame())
    for detection in found:
        assert detection.label == "person"
        assert detection.confidence >= min_confidence
        assert_well_formed(detection)
        weight = detection.attributes["svm_weight"]
        assert detection.confidence == pytest.approx(svm_confidence(weight), abs=1e-3)


def test_person_finds_nothing_in_a_flat_frame() -> None:
    flat = jpeg(np.full((HEIGHT_PX, WIDTH_PX, 3), 120, dtype=np.uint8))
    assert PersonAnalyser.from_config({}).analyse(flat) == []


def test_svm_confidence_squashes_the_weight() -> None:
    assert svm_confidence(0.0) == 0.5
    assert svm_confidence(2.0) == pytest.approx(0.8808, abs=1e-4)
    assert svm_confidence(-1000.0) == 0.0  # no overflow
    assert svm_confidence(1000.0) == 1.0
    for p in (0.1, 0.5, 0.6, 0.99):
        assert svm_confidence(svm_weight(p)) == pytest.approx(p)


# Boxes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rect", "expected"),
    [
        pytest.param((64, 36, 320, 180), (0.1, 0.1, 0.5, 0.5), id="inside"),
        pytest.param((-64, -36, 128, 72), (0.0, 0.0, 0.1, 0.1), id="clipped-top-left"),
        pytest.param((576, 324, 128, 72), (0.9, 0.9, 0.1, 0.1), id="clipped-bottom-right"),
        pytest.param((-10, -10, 700, 400), (0.0, 0.0, 1.0, 1.0), id="larger-than-frame"),
        pytest.param((640, 0, 10, 10), None, id="right-of-frame"),
        pytest.param((10, -50, 10, 50), None, id="above-frame"),
        pytest.param((10, 10, 0, 10), None, id="empty"),
    ],
)
def test_normalise_box(rect: tuple[int, int, int, int], expected: tuple[float, ...] | None) -> None:
    got = normalise_box(*rect, WIDTH_PX, HEIGHT_PX)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


coordinate = st.floats(-1e4, 1e4, allow_nan=False)


@given(
    x=coordinate,
    y=coordinate,
    w=st.floats(0, 1e4),
    h=st.floats(0, 1e4),
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
)
def test_normalised_boxes_keep_the_invariants_exactly(
    x: float, y: float, w: float, h: float, width: int, height: int
) -> None:
    box = normalise_box(x, y, w, h, width, height)
    if box is None:
        return
    bx, by, bw, bh = box
    assert 0 <= bx <= 1 and 0 <= by <= 1
    assert 0 < bw <= 1 and 0 < bh <= 1
    assert bx + bw <= 1 and by + bh <= 1  # exactly, as the kernel checks


def test_an_extent_that_rounds_past_one_is_shrunk_by_ulps() -> None:
    start, extent = 0.5, 0.5000000000000002
    assert start + extent > 1.0  # the float sum overshoots
    fitted = _fit_extent(start, extent)
    assert start + fitted <= 1.0
    assert fitted == math.nextafter(extent, 0.0)


# Registry and config ----------------------------------------------------------------------


def test_registry_has_motion_and_person() -> None:
    assert set(ANALYSERS) == {"motion", "person"}
    assert isinstance(build_analyser("motion", {}), MotionAnalyser)
    assert isinstance(build_analyser("person", {}), PersonAnalyser)


def test_unknown_task_type_names_the_known_ones() -> None:
    with pytest.raises(UnknownTaskType, match=r"'face'.*motion, person"):
        build_analyser("face", {})


@pytest.mark.parametrize(
    ("task_type", "config", "key", "rule"),
    [
        ("motion", {"threshold": 300}, "threshold", "integer from 1 to 254"),
        ("motion", {"threshold": 0}, "threshold", "integer from 1 to 254"),
        ("motion", {"threshold": True}, "threshold", "integer"),
        ("motion", {"threshold": 12.5}, "threshold", "integer"),
        ("motion", {"min_area": 0}, "min_area", "greater than 0 and at most 1"),
        ("motion", {"min_area": 1.5}, "min_area", "greater than 0 and at most 1"),
        ("motion", {"min_area": "big"}, "min_area", "number"),
        ("motion", {"min_area": float("nan")}, "min_area", "number"),
        ("motion", {"working_width": 8}, "working_width", "from 32 to 3840"),
        ("motion", {"dilate_iterations": -1}, "dilate_iterations", "from 0 to 10"),
        ("motion", {"treshold": 30}, "treshold", "not a setting of this analyser"),
        ("person", {"min_confidence": 1}, "min_confidence", "less than 1"),
        ("person", {"min_confidence": 0}, "min_confidence", "greater than 0"),
        ("person", {"threshold": 25}, "threshold", "known: min_confidence, working_width"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(
    task_type: str, config: dict[str, Any], key: str, rule: str
) -> None:
    with pytest.raises(AnalyserConfigError) as caught:
        build_analyser(task_type, config)
    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value) and rule in str(caught.value)
    assert str(caught.value).startswith(f"{task_type} config:")


def test_config_values_are_applied() -> None:
    config = MotionConfig.from_config({"threshold": 40, "min_area": 0.02, "working_width": 160})
    assert (config.threshold, config.min_area, config.working_width_px) == (40, 0.02, 160)
    assert MotionConfig.from_config({"min_area": 1}).min_area == 1.0  # an int is a number
