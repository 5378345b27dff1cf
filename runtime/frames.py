"""Frames as the detector and every sink take them: uint8 grey (H, W) or BGR (H, W, 3).

``conform_image`` says what a frame from any source (a custom one, a camera driver) is
converted into or rejected for; ``resize_frame`` is how a source resizes its frames
(``--resize``).
"""

from __future__ import annotations

import cv2
import numpy as np


def conform_image(image: object) -> tuple[np.ndarray | None, tuple[str, ...], str | None]:
    """Make a frame's image what the detector and sinks expect: uint8 grey (H, W) or BGR
    (H, W, 3). Returns (image, conversions made, reason for rejection or None).

    Converted (each counted by reason): (H, W, 1) to grey, BGRA to BGR (alpha dropped),
    uint16 to uint8 (``>> 8``), float in [0, 1] to uint8 (``* 255``). Rejected: an empty
    image, 2 or more than 4 channels, other dimensions, float outside [0, 1] (or not finite),
    any other dtype. A custom source or a camera driver can hand over any of these; guessing
    a meaning for the rejected ones would score garbage.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, (), "empty"
    if image.ndim not in (2, 3):
        return None, (), f"{image.ndim} dimensions"
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        return None, (), f"{channels} channels"
    floating = np.issubdtype(image.dtype, np.floating)
    if floating and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        return None, (), "float outside [0, 1]"
    if not floating and image.dtype not in (np.uint8, np.uint16):
        return None, (), f"dtype {image.dtype}"
    converted: list[str] = []
    if image.ndim == 3 and channels == 1:
        image = image[:, :, 0]
        converted.append("1 channel to grey")
    elif channels == 4:
        image = image[:, :, :3]
        converted.append("BGRA to BGR")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
        converted.append("uint16 to uint8")
    elif floating:
        image = (image * 255.0 + 0.5).astype(np.uint8)
        converted.append("float to uint8")
    return np.ascontiguousarray(image), tuple(converted), None


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image at ``size`` (W, H): area averaging to shrink (no aliasing), linear to grow."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
