"""Frame analysers of the reference worker: ``motion`` (frame differencing) and ``person`` (HOG).

An :class:`Analyser` belongs to one task and keeps that task's state (the motion background);
:meth:`~Analyser.analyse` takes one JPEG and returns its detections. Calls on one analyser are
sequential (one task loop owns it) and run in a worker thread: decoding and HOG are CPU work.

Invariants of every :class:`Detection` an analyser returns:

* ``0 <= confidence <= 1``;
* ``bbox = (x, y, w, h)`` is normalised to the frame: every value in ``0..1``, ``w > 0``,
  ``h > 0``, ``x + w <= 1`` and ``y + h <= 1`` exactly, in floating point (the kernel checks).

Task configs are JSON objects from the kernel. :func:`build_analyser` validates them before any
frame is seen: an unknown key or a value out of range raises :class:`AnalyserConfigError`
naming the key, the rule and how to fix it. numpy and OpenCV (the ``worker`` extra) are
imported on first use, so ``heldar --help`` stays fast; :func:`require_dependencies` turns
their absence into one clear message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from heldar.media.jpeg import jpeg_dimensions

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    GrayImage = npt.NDArray[np.uint8]

INSTALL_HINT = "install the worker extra: pip install 'heldar-kernel[worker]'"


# Errors -------------------------------------------------------------------------------


class AnalyserError(Exception):
    """Base of what the analysers raise on purpose; ``str()`` is safe to log."""


class MissingDependency(AnalyserError):
    """numpy or OpenCV is not installed (they come from the ``worker`` extra)."""


class UnknownTaskType(AnalyserError):
    """No analyser is registered for a task type."""


class AnalyserConfigError(AnalyserError):
    """A task's config breaks a rule; ``key`` names the offending key."""

    def __init__(self, task_type: str, key: str, rule: str) -> None:
        self.task_type = task_type
        self.key = key
        super().__init__(f"{task_type} config: {key!r} {rule}")


class FrameDecodeError(AnalyserError):
    """A frame is not a decodable JPEG; the frame is skipped, the task goes on."""


# Detections ---------------------------------------------------------------------------

BBox = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Detection:
    """One finding in one frame; see the module docstring for the bbox invariants."""

    label: str
    confidence: float
    bbox: BBox  # (x, y, w, h), normalised 0..1
    track_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def normalise_box(
    x_px: float, y_px: float, w_px: float, h_px: float, width_px: int, height_px: int
) -> BBox | None:
    """A pixel rectangle clipped to the frame and normalised; ``None`` when nothing is left.

    The result keeps the invariants of :class:`Detection` exactly: an extent is shrunk by
    float ulps where ``start + extent`` would round above 1.
    """
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"frame size must be positive (got {width_px}x{height_px})")
    x0, x1 = _clip(x_px, 0, width_px), _clip(x_px + w_px, 0, width_px)
    y0, y1 = _clip(y_px, 0, height_px), _clip(y_px + h_px, 0, height_px)
    if x1 <= x0 or y1 <= y0:
        return None
    x, y = x0 / width_px, y0 / height_px
    w = _fit_extent(x, x1 / width_px - x)
    h = _fit_extent(y, y1 / height_px - y)
    if w <= 0 or h <= 0:
        return None
    return (x, y, w, h)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _fit_extent(start: float, extent: float) -> float:
    """``extent``, shrunk until ``start + extent <= 1`` holds in floating point."""
    extent = min(extent, 1.0)
    while extent > 0 and start + extent > 1.0:
        extent = math.nextafter(extent, 0.0)
    return extent


# The protocol and the registry --------------------------------------------------------


class Analyser(Protocol):
    def analyse(self, jpeg: bytes) -> list[Detection]:
        """Detections in one frame; raises :class:`FrameDecodeError` for an undecodable one."""
        ...


AnalyserFactory = Callable[[Mapping[str, Any]], Analyser]
"""Builds one task's analyser from its config; raises :class:`AnalyserConfigError`."""


def build_analyser(
    task_type: str, config: Mapping[str, Any], registry: Mapping[str, AnalyserFactory] | None = None
) -> Analyser:
    """The analyser for one task: config validated, OpenCV loaded (in the caller's thread)."""
    factories = ANALYSERS if registry is None else registry
    factory = factories.get(task_type)
    if factory is None:
        known = ", ".join(sorted(factories)) or "none"
        raise UnknownTaskType(f"no analyser for task type {task_type!r} (this worker has: {known})")
    return factory(config)


def require_dependencies() -> None:
    """Raises :class:`MissingDependency` unless numpy and OpenCV (with HOG) can be imported."""
    cv2, _ = _modules()
    if not hasattr(cv2, "HOGDescriptor"):
        raise MissingDependency(
            f"OpenCV {getattr(cv2, '__version__', '?')} has no HOGDescriptor (OpenCV 5 moved "
            f"it out); {INSTALL_HINT}, which pins opencv-python-headless below 5"
        )


def _modules() -> tuple[ModuleType, ModuleType]:
    try:
        import cv2
        import numpy
    except ImportError as exc:
        message = f"the worker needs numpy and OpenCV ({exc}); {INSTALL_HINT}"
        raise MissingDependency(message) from exc
    return cv2, numpy


# Config values ------------------------------------------------------------------------


def _check_keys(task_type: str, config: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in config:
        if key not in known:
            rule = f"is not a setting of this analyser (known: {', '.join(known)}); remove it"
            raise AnalyserConfigError(task_type, str(key), rule)


def _int(
    task_type: str, config: Mapping[str, Any], key: str, default: int, low: int, high: int
) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        rule = f"must be an integer from {low} to {high} (got {_shown(value)})"
        raise AnalyserConfigError(task_type, key, rule)
    return value


def _fraction(
    task_type: str, config: Mapping[str, Any], key: str, default: float, *, one_allowed: bool
) -> float:
    """A number in ``(0, 1]`` (``one_allowed``) or ``(0, 1)``; 0 would mean "everything"."""
    value = config.get(key, default)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if is_number else math.nan
    if not (0 < number <= 1 if one_allowed else 0 < number < 1):  # NaN fails both
        bounds = "at most 1" if one_allowed else "less than 1"
        rule = f"must be a number greater than 0 and {bounds} (got {_shown(value)})"
        raise AnalyserConfigError(task_type, key, rule)
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Decoding -----------------------------------------------------------------------------

# libjpeg decodes at 1/8, 1/4 or 1/2 scale (IMREAD_REDUCED_GRAYSCALE_<n>) for a fraction of a
# full decode: the cheapest way to a small working image. Largest reduction first.
_REDUCTIONS = (8, 4, 2)
# Widest working image a config may ask for: bounds CPU per frame.
MAX_WORKING_WIDTH_PX = 3840


def decode_gray(jpeg: bytes, working_width_px: int) -> GrayImage:
    """The frame in grayscale, at most ``working_width_px`` wide (aspect kept; never upscaled).

    Decodes at a reduced scale when the JPEG is at least twice as wide as needed, then
    resizes with area averaging. Raises :class:`FrameDecodeError` for data that is not a JPEG.
    """
    cv2, np = _modules()
    try:
        width_px, _ = jpeg_dimensions(jpeg)
    except ValueError as exc:
        raise FrameDecodeError(f"frame is not a JPEG: {exc}") from exc
    flag = cv2.IMREAD_GRAYSCALE
    for factor in _REDUCTIONS:
        if width_px // factor >= working_width_px:
            flag = getattr(cv2, f"IMREAD_REDUCED_GRAYSCALE_{factor}")
            break
    try:
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), flag)
    except cv2.error as exc:
        raise FrameDecodeError(f"OpenCV cannot decode the frame: {exc}") from exc
    if image is None or image.ndim != 2 or image.size == 0:
        raise FrameDecodeError("OpenCV cannot decode the frame (corrupt or truncated JPEG)")
    height, width = image.shape
    if width > working_width_px:
        height_out = max(1, round(height * working_width_px / width))
        image = cv2.resize(image, (working_width_px, height_out), interpolation=cv2.INTER_AREA)
    result: GrayImage = image
    return result


# Motion -------------------------------------------------------------------------------

# Defaults: a pixel "changed" when its blurred brightness moved by more than 25 of 255 (the
# usual frame-differencing default: above the JPEG noise of a still, blurred scene); motion
# needs 0.5 % of the frame (about 1150 px of 640x360), so specks and flicker stay below it.
MOTION_THRESHOLD_DEFAULT = 25
MOTION_MIN_AREA_DEFAULT = 0.005
# 320 px wide is enough to see a person-sized change and makes differencing ~free.
MOTION_WORKING_WIDTH_DEFAULT_PX = 320
# Dilating the changed mask twice with a 3x3 kernel joins the fragments of one moving object.
MOTION_DILATE_ITERATIONS_DEFAULT = 2
MOTION_DILATE_ITERATIONS_MAX = 10
# A light 5x5 Gaussian blur removes JPEG block noise before differencing.
MOTION_BLUR_KERNEL_PX = 5
MIN_WORKING_WIDTH_PX = 32


@dataclass(frozen=True, slots=True)
class MotionConfig:
    threshold: int = MOTION_THRESHOLD_DEFAULT  # 1..254 of 255: |difference| above it changed
    min_area: float = MOTION_MIN_AREA_DEFAULT  # (0, 1]: changed fraction that is motion
    working_width_px: int = MOTION_WORKING_WIDTH_DEFAULT_PX
    dilate_iterations: int = MOTION_DILATE_ITERATIONS_DEFAULT  # 0 disables

    KEYS = ("threshold", "min_area", "working_width", "dilate_iterations")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MotionConfig:
        _check_keys("motion", config, cls.KEYS)
        return cls(
            threshold=_int("motion", config, "threshold", MOTION_THRESHOLD_DEFAULT, 1, 254),
            min_area=_fraction(
                "motion", config, "min_area", MOTION_MIN_AREA_DEFAULT, one_allowed=True
            ),
            working_width_px=_int(
                "motion",
                config,
                "working_width",
                MOTION_WORKING_WIDTH_DEFAULT_PX,
                MIN_WORKING_WIDTH_PX,
                MAX_WORKING_WIDTH_PX,
            ),
            dilate_iterations=_int(
                "motion",
                config,
                "dilate_iterations",
                MOTION_DILATE_ITERATIONS_DEFAULT,
                0,
                MOTION_DILATE_ITERATIONS_MAX,
            ),
        )


def motion_confidence(changed_fraction: float, min_area: float) -> float:
    """``f / (f + min_area)``: 0.5 exactly at the trigger, 0.75 at 3x, 0.9 at 9x, towards 1.

    Ties confidence to the configured sensitivity instead of an absolute area, so a consumer's
    ``confidence >= 0.5`` means "motion by this task's own rule" whatever ``min_area`` is.
    """
    if changed_fraction <= 0:
        return 0.0
    return changed_fraction / (changed_fraction + min_area)


class MotionAnalyser:
    """Frame differencing against the previous frame of the same task.

    Per frame: grayscale at the working width, blurred; ``absdiff`` with the previous frame;
    pixels whose difference exceeds ``threshold`` are changed. When the changed fraction
    (counted before dilation, so dilation does not inflate it) is at least ``min_area``, one
    ``motion`` detection: bbox = bounding box of the (dilated) changed pixels, confidence =
    :func:`motion_confidence`. The first frame, and a frame whose size differs from the
    previous one, only primes the background.
    """

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._previous: GrayImage | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MotionAnalyser:
        parsed = MotionConfig.from_config(config)
        _modules()
        return cls(parsed)

    def analyse(self, jpeg: bytes) -> list[Detection]:
        cv2, np = _modules()
        cfg = self.config
        gray = decode_gray(jpeg, cfg.working_width_px)
        kernel = (MOTION_BLUR_KERNEL_PX, MOTION_BLUR_KERNEL_PX)
        current = cv2.GaussianBlur(gray, kernel, 0)
        previous, self._previous = self._previous, current
        if previous is None or previous.shape != current.shape:
            return []
        diff = cv2.absdiff(previous, current)
        _, mask = cv2.threshold(diff, cfg.threshold, 255, cv2.THRESH_BINARY)
        changed_fraction = cv2.countNonZero(mask) / mask.size
        if changed_fraction < cfg.min_area:
            return []
        if cfg.dilate_iterations:
            structure = np.ones((3, 3), dtype=np.uint8)
            mask = cv2.dilate(mask, structure, iterations=cfg.dilate_iterations)
        x, y, w, h = cv2.boundingRect(mask)
        height_px, width_px = mask.shape
        bbox = normalise_box(x, y, w, h, width_px, height_px)
        if bbox is None:  # cannot happen with changed pixels; kept for the invariant
            return []
        return [
            Detection(
                label="motion",
                confidence=motion_confidence(changed_fraction, cfg.min_area),
                bbox=bbox,
                attributes={"changed_fraction": round(changed_fraction, 6)},
            )
        ]


# Person -------------------------------------------------------------------------------

# The SVM decision boundary (weight 0) maps to confidence 0.5; 0.6 (weight ~0.41) asks for a
# margin beyond it, which drops the weakest hits, most of them background texture.
PERSON_MIN_CONFIDENCE_DEFAULT = 0.6
# HOG finds people at least 128 px tall (its window); 640 px wide keeps people of a typical
# sub stream and bounds the cost of big frames (the pyramid grows with the area).
PERSON_WORKING_WIDTH_DEFAULT_PX = 640
# Pyramid step of detectMultiScale: OpenCV's default; smaller finds more sizes, slower.
PERSON_SCALE_STEP = 1.05


@dataclass(frozen=True, slots=True)
class PersonConfig:
    min_confidence: float = PERSON_MIN_CONFIDENCE_DEFAULT  # (0, 1)
    working_width_px: int = PERSON_WORKING_WIDTH_DEFAULT_PX

    KEYS = ("min_confidence", "working_width")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PersonConfig:
        _check_keys("person", config, cls.KEYS)
        return cls(
            min_confidence=_fraction(
                "person", config, "min_confidence", PERSON_MIN_CONFIDENCE_DEFAULT, one_allowed=False
            ),
            working_width_px=_int(
                "person",
                config,
                "working_width",
                PERSON_WORKING_WIDTH_DEFAULT_PX,
                MIN_WORKING_WIDTH_PX,
                MAX_WORKING_WIDTH_PX,
            ),
        )


def svm_confidence(weight: float) -> float:
    """The logistic of the SVM decision value: 0 (the boundary) is 0.5, +2 is 0.88, -2 is 0.12.

    A monotonic squash, not a calibrated probability: it orders detections and makes a
    threshold on 0..1 possible, nothing more.
    """
    if weight >= 0:
        return 1.0 / (1.0 + math.exp(-weight))
    exp = math.exp(weight)  # the other form, so a very negative weight cannot overflow
    return exp / (1.0 + exp)


def svm_weight(confidence: float) -> float:
    """The inverse of :func:`svm_confidence` for ``0 < confidence < 1`` (the ``hitThreshold``)."""
    return math.log(confidence / (1.0 - confidence))


class PersonAnalyser:
    """OpenCV's default HOG people detector (Dalal-Triggs SVM); stateless between frames.

    The SVM is asked only for windows with confidence at least ``min_confidence``
    (``hitThreshold`` = :func:`svm_weight`), overlapping windows are grouped by OpenCV, and
    each box is clipped to the frame and normalised.
    """

    def __init__(self, config: PersonConfig) -> None:
        require_dependencies()
        cv2, _ = _modules()
        self.config = config
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._hit_threshold = svm_weight(config.min_confidence)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PersonAnalyser:
        return cls(PersonConfig.from_config(config))

    def analyse(self, jpeg: bytes) -> list[Detection]:
        _, np = _modules()
        gray = decode_gray(jpeg, self.config.working_width_px)
        rects, weights = self._hog.detectMultiScale(
            gray, hitThreshold=self._hit_threshold, scale=PERSON_SCALE_STEP
        )
        height_px, width_px = gray.shape
        detections = []
        for (x, y, w, h), weight in zip(
            np.asarray(rects).reshape(-1, 4).tolist(),
            np.asarray(weights, dtype=np.float64).reshape(-1).tolist(),
            strict=True,
        ):
            confidence = svm_confidence(weight)
            bbox = normalise_box(x, y, w, h, width_px, height_px)
            if bbox is None or confidence < self.config.min_confidence:
                continue
            detections.append(
                Detection(
                    label="person",
                    confidence=confidence,
                    bbox=bbox,
                    attributes={"svm_weight": round(weight, 4)},
                )
            )
        return detections


ANALYSERS: Mapping[str, AnalyserFactory] = {
    "motion": MotionAnalyser.from_config,
    "person": PersonAnalyser.from_config,
}
"""The analysers of this worker by task type; the default ``task_types`` of a lease."""
