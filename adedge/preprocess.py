"""The one preprocessing function used by training, export, evaluation and the stream.

anomalib's most reported bug is exported scores that differ from training because the resize
or the normalisation was not carried with the model. Here training and the runtime call the
same function with the same :class:`InputSpec`, and the spec travels in the bundle card.
Images enter as uint8 arrays in RGB order (H, W, 3) or grey (H, W) / (H, W, 1); camera and
video frames are BGR and are converted by :func:`bgr_to_rgb` first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

COLOURS = ("gray", "rgb")
RESIZE_POLICY = "area-down-linear-up"


@dataclass(frozen=True)
class InputSpec:
    """What the network expects: size, colour and normalisation of one input tensor."""

    height: int = 32
    width: int = 32
    colour: str = "gray"
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))
    resize: str = RESIZE_POLICY

    @property
    def channels(self) -> int:
        return 1 if self.colour == "gray" else 3

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["channels"] = self.channels
        return data

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(
            height=int(data["height"]),
            width=int(data["width"]),
            colour=str(data["colour"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            resize=str(data.get("resize", RESIZE_POLICY)),
        )


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return frame


def to_colour(image: np.ndarray, colour: str) -> np.ndarray:
    """Convert one uint8 image (RGB or grey) to (H, W, C) in the spec's colour."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if colour == "gray":
        if image.shape[2] == 3:
            return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
        return image
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing), bilinear when growing."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = h * w > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 else out


def prepare_batch(images: list[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 images of any size -> float32 (N, C, H, W), resized and normalised per the spec."""
    count = len(images)
    out = np.empty((count, spec.channels, spec.height, spec.width), dtype=np.float32)
    scale = (1.0 / (255.0 * np.asarray(spec.std, np.float32))).reshape(-1, 1, 1)
    shift = (np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)).reshape(-1, 1, 1)
    for i, image in enumerate(images):
        image = resize(to_colour(np.asarray(image), spec.colour), spec.height, spec.width)
        out[i] = image.transpose(2, 0, 1).astype(np.float32) * scale - shift
    return out
