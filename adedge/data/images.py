"""Image files: which suffixes count, listing a folder or a glob, reading one image as uint8
RGB or grey (the runtime's image-folder source reads them the same way).
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np

from adedge.errors import DataError
from adedge.preprocess import uint16_to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) or grey (H, W); a DataError names a file OpenCV cannot decode."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"cannot read image '{path}'", "remove or re-save the file (PNG or JPEG)")
    if image.dtype == np.uint16:
        image = uint16_to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def expand_image_glob(pattern: str) -> list[Path]:
    """Sorted image files of a folder or a glob pattern."""
    path = Path(pattern)
    if path.is_dir():
        return list_images(path)
    return sorted(
        Path(p) for p in glob.glob(pattern, recursive=True) if p.lower().endswith(IMAGE_SUFFIXES)
    )
