"""Heldar Kernel: the camera media kernel (frame sampling for AI workers, scheduled snapshots)."""

__version__ = "0.1.0"
