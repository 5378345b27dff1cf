"""Per-frame kernels of tiled stages: the fused C++ extension or its numpy/OpenCV twins.

Two kernels (docs/architecture.md, Runtime), each with a twin that is the code the runtime
ran before the extension existed and that stays the fallback (a Jetson without a compiler
still runs):

* :func:`preprocess_tiles` — uint8 frame -> resize (``adedge.preprocess.resize``'s policy
  "area-down-linear-up": ``INTER_AREA`` when the pixel count shrinks, ``INTER_LINEAR``
  otherwise) -> colour (``to_colour``; BGR frames with ``order="bgr"``) -> mean/std
  normalisation -> the plan's row-major tiles, padded per the card, as an (N, C, t, t)
  float32 or float16 batch. The C++ kernel reproduces OpenCV's 8-bit resize and RGB2GRAY
  arithmetic, so its resized pixels equal the twin's (the tests allow +-1 LSB before
  normalisation; on the frames tested they are bit-equal), and writes the tiles straight into
  the caller's buffer (``out``) with no frame-size temporary.
* :func:`stitch` / :func:`stitch_max_mean` — tile maps averaged where tiles overlap (float64
  sums in row-major tile order, so bit-equal to :func:`adedge.runtime.tiling.stitch`), and
  the tile scores reduced by max (IGD's local max-pooling) or mean.

Which one runs: ``use("auto" | "cpp" | "numpy")`` or the ``ADEDGE_KERNELS`` environment
variable; "auto" (the default) takes the C++ kernel when ``adedge._cpp`` imports, because the
benchmark (benchmarks/test_bench_kernels.py) measured it faster. ``set_threads(n)`` or
``ADEDGE_KERNEL_THREADS`` sets the C++ kernels' threads (0: every core); the twins use
OpenCV's own threading.

What the fused kernel does not cover, and hands to the twin: stages whose graph input is not
tile-sized (tiles resized again to the input), non-uint8 frames, resize policies other than
"area-down-linear-up", and maps that are not tile-sized.
"""

from __future__ import annotations

import os

import numpy as np

from adedge.errors import AdedgeError
from adedge.preprocess import (
    COLOURS,
    RESIZE_POLICY,
    InputSpec,
    normalisation,
    normalise,
    prepare_image,
    to_colour,
)
from adedge.runtime.tiling import (
    TilingPlan,
    pad_to_plan,
    reduce_scores,
    tiles_from_padded,
)
from adedge.runtime.tiling import stitch as stitch_numpy

try:  # built by setup.py when a C++17 compiler and pybind11 are there
    from adedge import _cpp
except ImportError:  # pragma: no cover - depends on the install
    _cpp = None

MODES = ("auto", "cpp", "numpy")
ENV_MODE = "ADEDGE_KERNELS"
ENV_THREADS = "ADEDGE_KERNEL_THREADS"
OUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
# What "auto" picks when the extension is there: the faster one in the benchmark.
AUTO_PREFERS_CPP = True

_state = {"mode": "auto", "threads": 0, "environment_read": False}


def available() -> bool:
    """Whether the C++ extension ``adedge._cpp`` was built and imports."""
    return _cpp is not None


def use(mode: str) -> None:
    """Choose the kernels: "auto" (C++ when built), "cpp" (fail if not built) or "numpy"."""
    if mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got '{mode}'")
    if mode == "cpp" and not available():
        raise RuntimeError(
            "the C++ kernels (adedge._cpp) are not built: reinstall with a C++17 compiler "
            "(`pip install -e .` builds cpp_ext/), or use the numpy kernels"
        )
    _state["mode"] = mode


def set_threads(threads: int) -> None:
    """Threads of the C++ kernels; 0 = every core."""
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0 (0: every core), got {threads}")
    _state["threads"] = int(threads)


def threads() -> int:
    configure_from_environment()
    return int(_state["threads"])


def active() -> str:
    """The kernels that run now: "cpp" or "numpy"."""
    configure_from_environment()
    mode = _state["mode"]
    if mode == "cpp" or (mode == "auto" and AUTO_PREFERS_CPP and available()):
        return "cpp"
    return "numpy"


def configure_from_environment() -> None:
    """Apply ``ADEDGE_KERNELS`` and ``ADEDGE_KERNEL_THREADS`` once, on first use (the
    Detector calls it when it loads, before any frame); a bad value is one line naming the
    variable, not a traceback at import."""
    if _state["environment_read"]:
        return
    mode = os.environ.get(ENV_MODE, "").strip().lower()
    if mode and mode not in MODES:
        raise AdedgeError(
            f"{ENV_MODE}='{os.environ[ENV_MODE]}' is not a kernel choice",
            f"set it to one of {', '.join(MODES)}, or unset it",
        )
    if mode == "cpp" and not available():
        raise AdedgeError(
            f"{ENV_MODE}=cpp but the C++ kernels (adedge._cpp) are not built",
            "reinstall with a C++17 compiler (`pip install -e .`), or set it to auto",
        )
    count = os.environ.get(ENV_THREADS, "").strip()
    if count and not count.isdigit():
        raise AdedgeError(
            f"{ENV_THREADS}='{os.environ[ENV_THREADS]}' is not a number of threads",
            "set it to 0 (every core) or more, or unset it",
        )
    if mode:
        use(mode)
    if count:
        set_threads(int(count))
    _state["environment_read"] = True


# --- preprocessing ------------------------------------------------------------------------


def fused_supported(spec: InputSpec, plan: TilingPlan) -> bool:
    """Whether the fused kernel covers this stage: tile-sized input, known colour and policy."""
    return (
        (spec.height, spec.width) == (plan.tile, plan.tile)
        and spec.colour in COLOURS
        and spec.resize == RESIZE_POLICY
        and len(spec.mean) == len(spec.std) == spec.channels
    )


def _out_buffer(out: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """``out`` checked like the C++ kernel checks it (same error types), or a new buffer."""
    if out is None:
        dtype = np.dtype(dtype)
        if dtype not in OUT_DTYPES:
            raise TypeError(f"dtype must be float32 or float16, got {dtype}")
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype not in OUT_DTYPES:
        raise TypeError(f"out must be float32 or float16, got {out.dtype}")
    if out.ndim != 4 or out.shape[1:] != shape[1:] or out.shape[0] < shape[0]:
        raise ValueError(f"out must be (N >= {shape[0]}, {shape[1:]}), got {out.shape}")
    return out


def preprocess_tiles_numpy(
    image: np.ndarray,
    plan: TilingPlan,
    spec: InputSpec,
    out: np.ndarray | None = None,
    order: str = "rgb",
    dtype=np.float32,
) -> np.ndarray:
    """The twin: :mod:`adedge.preprocess`'s steps with numpy and OpenCV (colour, resize,
    pad, normalise, cut), the tiles written into ``out`` when given.

    A tile-sized graph input normalises the padded frame once and copies its tiles out; a
    graph of another size gets each tile resized to its input, as training prepares tiles.
    """
    padded = pad_to_plan(to_colour(np.asarray(image), spec.colour, order), plan)
    if (spec.height, spec.width) != (plan.tile, plan.tile):
        shape = (plan.count, spec.channels, spec.height, spec.width)
        buffer = _out_buffer(out, shape, dtype)
        for row, tile in zip(buffer, tiles_from_padded(padded, plan), strict=False):
            prepare_image(tile, spec, row)
        return buffer[: plan.count]
    shape = (plan.count, spec.channels, plan.tile, plan.tile)
    buffer = _out_buffer(out, shape, dtype)
    whole = normalise(padded, spec)  # (C, Hp, Wp)
    return tiles_from_padded(whole, plan, channels_first=True, out=buffer[: plan.count])


def preprocess_tiles(
    image: np.ndarray,
    plan: TilingPlan,
    spec: InputSpec,
    out: np.ndarray | None = None,
    order: str = "rgb",
    dtype=np.float32,
) -> np.ndarray:
    """The (N, C, t, t) normalised tiles of one frame, written into ``out`` when given.

    ``out`` may hold more than N tiles (a slice of a bigger batch); the first N are written
    and returned. ``order`` is the frame's channel order ("bgr" for camera frames).
    """
    image = np.asarray(image)
    if image.shape[:2] != plan.frame_hw:
        raise ValueError(f"frame is {image.shape[:2]} but the plan is for {plan.frame_hw}")
    channels = image.shape[2] if image.ndim == 3 else 1
    fused = (
        active() == "cpp"
        and fused_supported(spec, plan)
        and image.dtype == np.uint8
        and image.ndim in (2, 3)
        and channels in (1, 3, 4)
    )
    if not fused:
        return preprocess_tiles_numpy(image, plan, spec, out, order, dtype)
    shape = (plan.count, spec.channels, plan.tile, plan.tile)
    buffer = _out_buffer(None, shape, dtype) if out is None else out  # the kernel checks out
    scale, shift = normalisation(spec)
    _cpp.preprocess_tiles(
        image if image.strides[-1] == image.itemsize else np.ascontiguousarray(image),
        buffer,
        resized_hw=plan.resized_hw,
        tile=plan.tile,
        stride=plan.stride,
        padding=plan.padding,
        colour=spec.colour,
        scale=scale.tolist(),
        shift=shift.tolist(),
        order=order,
        threads=threads(),
    )
    return buffer[: plan.count]


# --- stitching ----------------------------------------------------------------------------


def _fused_maps(tile_maps: np.ndarray, plan: TilingPlan) -> np.ndarray | None:
    """(N, t, t) float32 C-contiguous maps for the C++ kernel, or None (the twin handles it)."""
    maps = np.asarray(tile_maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[1:] != (plan.tile, plan.tile):
        return None
    return np.ascontiguousarray(maps, dtype=np.float32)


def stitch(tile_maps: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """(H, W) float32 map of the resized frame: overlapping tiles averaged, padding cropped."""
    maps = _fused_maps(tile_maps, plan) if active() == "cpp" else None
    if maps is None or len(maps) != plan.count:  # the twin says what is wrong
        return stitch_numpy(tile_maps, plan)
    _, amap = _cpp.stitch_max_mean(
        np.zeros(plan.count, np.float32),  # the map only: the runtime reduces scores apart
        maps,
        resized_hw=plan.resized_hw,
        tile=plan.tile,
        stride=plan.stride,
        threads=threads(),
    )
    return amap


def stitch_max_mean_numpy(
    tile_scores: np.ndarray, tile_maps: np.ndarray, plan: TilingPlan, how: str = "max"
) -> tuple[float, np.ndarray]:
    """The twin: reduce_scores and stitch from runtime/tiling.py."""
    return reduce_scores(tile_scores, plan, how), stitch_numpy(tile_maps, plan)


def stitch_max_mean(
    tile_scores: np.ndarray, tile_maps: np.ndarray, plan: TilingPlan, how: str = "max"
) -> tuple[float, np.ndarray]:
    """(frame score, stitched map) from one frame's tile scores and tile maps.

    max is bit-equal to the twin; mean sums in order where numpy sums pairwise, so the two
    may differ in the last bits (relative 1e-15).
    """
    maps = _fused_maps(tile_maps, plan) if active() == "cpp" else None
    scores = np.asarray(tile_scores)
    fused = maps is not None and len(maps) == plan.count and scores.size == plan.count
    if not fused or scores.dtype not in (np.float32, np.float64):
        return stitch_max_mean_numpy(tile_scores, tile_maps, plan, how)
    score, amap = _cpp.stitch_max_mean(
        np.ascontiguousarray(scores).reshape(-1),
        maps,
        resized_hw=plan.resized_hw,
        tile=plan.tile,
        stride=plan.stride,
        reduce=how,
        threads=threads(),
    )
    return float(score), amap
