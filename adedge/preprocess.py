"""How an image becomes a network input: the numbers training, export and the runtime share.

anomalib's most reported bug is exported scores that differ from training because the resize
or the normalisation was not carried with the model. Here every step is defined once, the
:class:`InputSpec` that parameterises them travels in the bundle card, and both sides build
their batches from these functions: training and export with :func:`prepare_batch`, the
runtime with :mod:`adedge.runtime.frames` (which takes the C++ kernel where it is built; the
kernel reproduces these steps' arithmetic, and the tests hold the two equal).

The steps, in order: colour (:func:`to_colour`; grey is made before resizing), resize
(:func:`resize`, :data:`RESIZE_POLICY`), for a tiled stage padding and cutting the tiles
(geometry: :func:`tile_axis`), and normalisation (:func:`normalisation`, ``u8 * scale -
shift``). Images enter as uint8 (H, W, 3) or grey (H, W) / (H, W, 1), in RGB order (a data
set's images) or BGR order (camera and video frames: ``order="bgr"``); a fourth channel
(alpha) is dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

COLOURS = ("gray", "rgb")
ORDERS = ("rgb", "bgr")  # channel order of 3- and 4-channel images
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


def uint16_to_uint8(image: np.ndarray) -> np.ndarray:
    """A uint16 image as uint8: the high byte (``>> 8``).

    Exact for both ways 8-bit data is widened to 16 bits: full-range scaling ``v * 257`` and
    left-justified sensor data ``v << 8`` (``// 257`` would turn every ``v << 8`` into
    ``v - 1``), and every uint8 level gets an equal share (256) of the uint16 levels.
    """
    return (image >> 8).astype(np.uint8)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """A 3-channel BGR frame in RGB order (other frames unchanged)."""
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return frame


def to_colour(image: np.ndarray, colour: str, order: str = "rgb") -> np.ndarray:
    """One image (grey, or 3/4 channels in ``order``) as (H, W, C) in the spec's colour, RGB
    for colour. A BGR image is converted in the same single OpenCV call as an RGB one (BGR to
    grey, or BGR to RGB): OpenCV's BGR2GRAY is its RGB2GRAY with the weights swapped."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got '{order}'")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    bgr = order == "bgr" and image.shape[2] == 3
    if colour == "gray":
        if image.shape[2] == 3:
            code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
            return cv2.cvtColor(np.ascontiguousarray(image), code)[:, :, None]
        return image
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB) if bgr else image


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The image at (height, width) under :data:`RESIZE_POLICY`: area averaging when the
    pixel count shrinks (no aliasing), bilinear otherwise, nothing when the size is already
    right. The layout stays: (H, W) stays 2-D, (H, W, C) keeps its channel axis."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = h * w > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out


def normalisation(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, shift) per channel, with value = u8 * scale - shift, i.e.
    (u8 / 255 - mean) / std folded into one multiply and one subtract."""
    std = np.asarray(spec.std, np.float32)
    scale = 1.0 / (255.0 * std)
    shift = np.asarray(spec.mean, np.float32) / std
    return scale.astype(np.float32), shift.astype(np.float32)


def normalise(image: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) float32 from an (H, W, C) image: ``float32(pixel) * scale - shift``, written
    into ``out`` (float32 or float16, cast from float32 like ``astype``) when given."""
    scale, shift = (v.reshape(-1, 1, 1) for v in normalisation(spec))
    values = image.transpose(2, 0, 1).astype(np.float32) * scale - shift
    if out is None:
        return values
    out[...] = values
    return out


def tile_axis(length: int, tile: int, stride: int) -> tuple[int, int]:
    """(tile count, padded length) along one axis: the fewest ``tile``-sized tiles every
    ``stride`` pixels that cover ``length``, and the length they cover, ``ceil((length -
    tile) / stride) * stride + tile`` (one tile, padded to ``tile``, when ``length <= tile``).
    """
    if length <= tile:
        return 1, tile
    count = -(-(length - tile) // stride) + 1
    return count, (count - 1) * stride + tile


def tile_count(size_hw: tuple[int, int], tile: int, stride: int) -> int:
    """Tiles per image of (height, width): rows times columns of :func:`tile_axis`."""
    return tile_axis(int(size_hw[0]), tile, stride)[0] * tile_axis(int(size_hw[1]), tile, stride)[0]


def prepare_image(
    image: np.ndarray, spec: InputSpec, out: np.ndarray | None = None, order: str = "rgb"
) -> np.ndarray:
    """One image (any size) -> (C, H, W) float32, colour converted, resized and normalised
    per the spec; written into ``out`` when given."""
    image = to_colour(np.asarray(image), spec.colour, order)
    return normalise(resize(image, spec.height, spec.width), spec, out)


def prepare_batch(
    images: list[np.ndarray] | np.ndarray, spec: InputSpec, order: str = "rgb"
) -> np.ndarray:
    """uint8 images of any size -> float32 (N, C, H, W), resized and normalised per the spec."""
    out = np.empty((len(images), spec.channels, spec.height, spec.width), dtype=np.float32)
    for i, image in enumerate(images):
        prepare_image(image, spec, out[i], order)
    return out
