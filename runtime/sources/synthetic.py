"""The synthetic scene: a textured surface with defects injected at known frames, so the whole
pipeline runs with no camera and no data (``synthetic:seed=1,size=256,frames=100``;
``texture=brick|grass|gravel`` moves a real photographed texture from scikit-image;
``motion=conveyor`` runs it past the camera at the photograph's own scale, the scale the
``texture:`` data sets train on).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import cv2
import numpy as np

from adedge.defects import DEFECT_KINDS, REAL_TEXTURES, add_defect, load_texture
from adedge.errors import SourceError
from adedge.runtime.sources.base import Frame, FrameSource
from adedge.uri import Uri, parse_uri

SYNTHETIC = "synthetic"  # the source's name: synthetic[:key=value,...]
PHOTOGRAPH_SIDE = 512  # scikit-image's texture photographs are 512x512
SYNTHETIC_FPS = 25.0  # timestamps are index / fps (the --fps cap where one is given)
SYNTHETIC_OPTIONS = (
    "seed",
    "size",
    "frames",
    "defect_every",
    "defect_first",
    "texture",
    "motion",
    "speed",
)
DRIFT_PERIODS = (53.0, 71.0)  # frames per sway along x and y: slow, and never in step


class Motion(str, Enum):
    """How the surface moves: a vibrating camera over a scaled photograph, or a belt that
    carries the photograph past at its own pixel scale."""

    SWAY = "sway"
    CONVEYOR = "conveyor"


@dataclass(frozen=True)
class SceneOptions:
    seed: int = 0
    width: int = 256
    height: int = 256
    frames: int | None = None
    defect_every: int = 10
    defect_first: int = 5
    texture: str | None = None  # one of REAL_TEXTURES; None: the procedural surface
    motion: Motion = Motion.SWAY
    speed: int = 3  # conveyor: pixels the surface moves per frame


class SyntheticSource(FrameSource):
    """A textured surface moving slightly from frame to frame, with defects at known frames.

    Frame ``t`` depends only on (seed, t). The default surface is procedural and periodic
    (built in the Fourier domain), so drifting by ``np.roll`` never reveals an edge and
    leaves the frame mean unchanged. ``texture=brick|grass|gravel`` shows a real photograph
    instead (scikit-image's ``skimage.data``), scaled to cover the frame plus a small margin
    and swaying within that margin like a vibrating camera. Only the motion, sensor noise
    and the defects vary. ``motion=conveyor`` instead carries the photograph past at its
    own pixel scale, ``speed`` pixels per frame from right to left, through an endless strip
    of the photograph and its mirror image (so no seam shows); the window sits across the
    middle of the photograph, so it sees the rows a ``texture:`` model trained on and the
    held-out ones below them. ``frames=N`` makes the scene N frames long (endless otherwise).
    Defects (scratch, dark blob, stain, missing patch, in turn) appear on frames
    ``defect_first + k * defect_every`` and those frames carry ``truth=True``.
    """

    def __init__(self, spec: str, scene: SceneOptions, **options: Any) -> None:
        super().__init__(spec, **options)
        self.scene = scene
        self.nominal_fps = self.fps or SYNTHETIC_FPS
        if scene.texture is None:
            self.margin = 0
            self.texture = surface_texture(scene.height, scene.width, scene.seed)
        elif scene.motion is Motion.CONVEYOR:
            self.margin = 0
            self.texture = conveyor_strip(load_real_texture(scene.texture), scene)
        else:
            self.margin = max(2, min(scene.width, scene.height) // 32)
            grey = fit_texture(load_real_texture(scene.texture), scene, self.margin)
            self.texture = np.repeat(grey[:, :, None], 3, axis=2)
        self._phase = np.random.default_rng([scene.seed, 7]).uniform(0, 2 * np.pi, 2)

    def is_defect(self, index: int) -> bool:
        every, first = self.scene.defect_every, self.scene.defect_first
        return every > 0 and index >= first and (index - first) % every == 0

    def background(self, index: int) -> np.ndarray:
        """The moved surface of frame ``index``, float32 BGR, before noise and defects."""
        height, width = self.scene.height, self.scene.width
        if self.scene.motion is Motion.CONVEYOR:
            shift = -(index * self.scene.speed) % self.texture.shape[1]
            return np.roll(self.texture, shift, 1)[:, :width]
        if self.scene.texture is None:
            return np.roll(self.texture, (index % height, (2 * index) % width), (0, 1))
        sway = np.sin(2 * np.pi * index / np.asarray(DRIFT_PERIODS) + self._phase)
        dx, dy = (np.rint(self.margin * (1.0 + sway))).astype(int)
        return self.texture[dy : dy + height, dx : dx + width]

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as BGR uint8 (deterministic)."""
        image = self.background(index)
        rng = np.random.default_rng([self.scene.seed, index])
        image = image + rng.normal(0.0, 2.0, image.shape).astype(np.float32)
        if self.is_defect(index):
            kind = (index - self.scene.defect_first) // self.scene.defect_every
            image = add_defect(image, DEFECT_KINDS[kind % len(DEFECT_KINDS)], rng)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        while not self.closed and (self.scene.frames is None or index < self.scene.frames):
            if self._kept(index):
                yield Frame(
                    index,
                    index / self.nominal_fps,
                    self.render(index),
                    "synthetic",
                    truth=self.is_defect(index),
                )
            index += 1

    def _positions(self) -> int | None:
        return self.scene.frames

    def describe(self) -> str:
        s = self.scene
        defects = (
            f"defects every {s.defect_every} frames from frame {s.defect_first}"
            if s.defect_every > 0
            else "no defects"
        )
        surface = "" if s.texture is None else f" on real texture '{s.texture}' (scikit-image)"
        motion = f", conveyor at {s.speed} px/frame" if s.motion is Motion.CONVEYOR else ""
        return f"synthetic scene {s.width}x{s.height}{surface}{motion} seed={s.seed}, {defects}"


def load_real_texture(name: str) -> np.ndarray:
    """scikit-image's bundled photograph ``name`` (512x512 grey uint8), or a SourceError."""
    return load_texture(
        name,
        SourceError,
        f"synthetic texture '{name}'",
        "or leave out texture= for the procedural surface",
    )


def fit_texture(grey: np.ndarray, scene: SceneOptions, margin: int) -> np.ndarray:
    """Scale ``grey`` uniformly to cover the frame plus ``margin`` on every side, then crop
    the centre: float32 (height + 2 margin, width + 2 margin)."""
    want_h, want_w = scene.height + 2 * margin, scene.width + 2 * margin
    scale = max(want_h / grey.shape[0], want_w / grey.shape[1])
    size = (max(want_w, round(grey.shape[1] * scale)), max(want_h, round(grey.shape[0] * scale)))
    shrink = scale < 1.0
    scaled = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    top, left = (size[1] - want_h) // 2, (size[0] - want_w) // 2
    return scaled[top : top + want_h, left : left + want_w].astype(np.float32)


def conveyor_strip(grey: np.ndarray, scene: SceneOptions) -> np.ndarray:
    """The belt: ``grey`` at its own scale, its middle ``scene.height`` rows, followed by
    their mirror image (an endless strip without a seam), repeated until it is wider than
    the frame; float32 BGR."""
    top = (grey.shape[0] - scene.height) // 2
    rows = grey[top : top + scene.height].astype(np.float32)
    strip = np.concatenate([rows, rows[:, ::-1]], axis=1)
    strip = np.tile(strip, (1, -(-(scene.width + 1) // strip.shape[1])))
    return np.repeat(strip[:, :, None], 3, axis=2)


def _periodic_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """White noise blurred by a Gaussian of ``sigma`` px with wrap-around (via the FFT)."""
    noise = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(height, width))
    return smooth / (smooth.std() + 1e-12)


def surface_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A tileable grey-brown texture, float32 BGR in about [40, 200]."""
    rng = np.random.default_rng(seed)
    scale = min(height, width) / 256.0
    octaves = ((24.0, 1.0), (8.0, 0.5), (3.0, 0.3), (1.0, 0.15))
    field = sum(amp * _periodic_noise(rng, height, width, sigma * scale) for sigma, amp in octaves)
    field = (field - field.mean()) / field.std()
    grey = np.clip(120.0 + 22.0 * field, 40.0, 200.0)
    tint = np.array([0.82, 0.93, 1.06], dtype=np.float32)  # B, G, R: brownish grey
    return (grey[:, :, None] * tint).astype(np.float32)


def parse_synthetic(spec: str | Uri) -> SceneOptions:
    """``synthetic[:key=value,...]`` -> SceneOptions; a bad option is a SourceError."""
    uri = spec if isinstance(spec, Uri) else parse_uri(spec, named=(SYNTHETIC,))

    def not_understood(item: str) -> SourceError:
        return SourceError(
            f"synthetic option '{item}' in '{uri}' is not understood",
            f"use {', '.join(SYNTHETIC_OPTIONS)}, e.g. synthetic:seed=1,size=256,texture=brick",
        )

    values = uri.values(not_understood, SYNTHETIC_OPTIONS)
    texture = values.get("texture")
    if texture is not None and texture not in REAL_TEXTURES:
        raise SourceError(
            f"synthetic texture '{texture}' in '{uri}' is not known",
            f"use texture={'|'.join(REAL_TEXTURES)}, or leave it out for the procedural surface",
        )
    try:
        width, height = _parse_size(values.get("size", "256"))
        scene = SceneOptions(
            seed=int(values.get("seed", 0)),
            width=width,
            height=height,
            frames=int(values["frames"]) if "frames" in values else None,
            defect_every=int(values.get("defect_every", 10)),
            defect_first=int(values.get("defect_first", 5)),
            texture=texture,
            motion=Motion(values.get("motion", Motion.SWAY.value)),
            speed=int(values.get("speed", 3)),
        )
    except ValueError:
        raise SourceError(
            f"synthetic options in '{uri}' have a value of the wrong type",
            "seed, frames, defect_every, defect_first, speed take integers; size takes N or "
            "WxH; motion takes sway or conveyor",
        ) from None
    if min(width, height) < 16 or (scene.frames is not None and scene.frames < 0):
        raise SourceError(
            f"synthetic options in '{uri}' are out of range", "use size >= 16 and frames >= 0"
        )
    if scene.motion is Motion.CONVEYOR:
        _check_conveyor(scene, str(uri))
    return scene


def _check_conveyor(scene: SceneOptions, uri: str) -> None:
    """A conveyor shows the photograph at its own scale, so the frame must fit in it."""
    if scene.texture is None:
        raise SourceError(
            f"motion=conveyor in '{uri}' needs a real texture",
            f"add texture={'|'.join(REAL_TEXTURES)}",
        )
    if scene.height > PHOTOGRAPH_SIDE or scene.speed < 1:
        raise SourceError(
            f"synthetic options in '{uri}' do not fit a conveyor",
            f"use a frame height <= {PHOTOGRAPH_SIDE} (the photograph's own scale) and speed >= 1",
        )


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)
