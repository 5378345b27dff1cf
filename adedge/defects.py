"""Synthetic surface defects with their pixel masks, and the real textures they go on.

Shared by the ``synthetic`` stream source (defects at known frames) and the ``texture:``
data sets (held-out texture regions with defects and pixel ground truth). numpy and
OpenCV only; scikit-image is imported only when a real texture is asked for.
"""

from __future__ import annotations

import cv2
import numpy as np

from adedge.errors import AdedgeError

DEFECT_KINDS = ("scratch", "dark blob", "stain", "missing patch")
REAL_TEXTURES = ("brick", "grass", "gravel")  # scikit-image's bundled 512x512 grey photographs


def read_texture(name: str) -> np.ndarray:
    """scikit-image's bundled photograph ``name`` as 512x512 grey uint8.

    Raises ValueError for an unknown name, ImportError without scikit-image and OSError when
    scikit-image cannot read it; callers turn these into their own one-line errors.
    """
    if name not in REAL_TEXTURES:
        raise ValueError(f"unknown texture {name!r}")
    from skimage import data

    image = np.asarray(getattr(data, name)())
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def load_texture(name: str, error: type[AdedgeError], asked: str, instead: str = "") -> np.ndarray:
    """:func:`read_texture`, its failures raised as one line of type ``error`` naming what
    the user asked for (``asked``, e.g. "synthetic texture 'brick'") and the fix; ``instead``
    adds another way to the scikit-image install hint (e.g. leaving the option out)."""
    if name not in REAL_TEXTURES:
        raise error(f"{asked} is not known", f"use one of {', '.join(REAL_TEXTURES)}")
    try:
        return read_texture(name)
    except ImportError:
        install = f"pip install scikit-image ({instead})" if instead else "pip install scikit-image"
        raise error(f"{asked} needs scikit-image, which is not installed", install) from None
    except (OSError, ValueError) as exc:
        raise error(f"scikit-image cannot load {asked} ({exc})", "reinstall scikit-image") from None


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one defect of ``kind`` at a random place; float32 BGR in, float32 BGR out."""
    return draw_defect(image, kind, rng)[0]


def draw_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` at a random place: (float32 image, float32 (H, W) mask).

    The mask is the blend weight in [0, 1]; pixels with weight >= 0.5 are the defect's
    ground truth for pixel-level AUROC.
    """
    mask, colour = defect_mask(image.shape[:2], kind, rng)
    return _blend(image, mask, colour), mask


def defect_mask(
    shape: tuple[int, int], kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The blend weights of one defect of ``kind`` and its BGR colour."""
    height, width = shape
    side = min(height, width)
    centre = (int(rng.uniform(0.2, 0.8) * width), int(rng.uniform(0.2, 0.8) * height))
    mask = np.zeros((height, width), np.float32)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.2, 0.3) * side
        dx, dy = int(half * np.cos(angle)), int(half * np.sin(angle))
        p1, p2 = (centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)
        cv2.line(mask, p1, p2, 1.0, max(2, side // 80), cv2.LINE_AA)
        return mask, (215.0, 220.0, 225.0)
    if kind == "dark blob":
        cv2.circle(mask, centre, int(rng.uniform(0.06, 0.09) * side), 1.0, -1, cv2.LINE_AA)
        return cv2.GaussianBlur(mask, (0, 0), max(1.0, side / 200)), (22.0, 24.0, 28.0)
    if kind == "stain":
        axes = (int(rng.uniform(0.1, 0.15) * side), int(rng.uniform(0.06, 0.1) * side))
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, side / 60))
        return mask * 0.7, (30.0, 60.0, 110.0)
    if kind == "missing patch":
        half = int(rng.uniform(0.06, 0.08) * side)
        x, y = centre
        mask[max(0, y - half) : y + half, max(0, x - half) : x + half] = 1.0
        return mask, (8.0, 8.0, 8.0)
    raise ValueError(f"unknown defect kind {kind!r}")


def _blend(image: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """Paint ``colour`` (BGR) with weights ``mask``; grey images get the colour's luma."""
    paint = np.asarray(colour, np.float32)
    if image.ndim == 2 or image.shape[2] == 1:
        paint = np.float32(paint @ np.array([0.114, 0.587, 0.299], np.float32))
    alpha = mask if image.ndim == 2 else mask[:, :, None]
    return (image * (1.0 - alpha) + paint * alpha).astype(np.float32)
