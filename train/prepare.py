"""A run's data and device, made ready once before the epoch loop.

:func:`prepare` builds the tensors the loop trains and validates on with the bundle's own
preprocessing (whole images at the stage's frame size; validation and test images as the
runtime's grid of tiles for tiled stages); :func:`subclass_labels` gives the method's latent
classifier its labels (ground truth, or weak k-means ones); :func:`pick_device` turns
``--device`` into a torch device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adedge.data import DataSet
from adedge.errors import AdedgeError, DataError
from adedge.preprocess import InputSpec, prepare_batch
from adedge.train.methods.base import Method, StagePlan
from adedge.train.options import TrainOptions
from adedge.train.views import grid_tiles, tiles_per_image
from adedge.train.weak_labels import weak_labels


@dataclass
class Prepared:
    """Tensors built once from the data set with the bundle's own preprocessing.

    ``train_x`` holds whole images at the plan's frame size (tiled stages crop them per
    step); ``val_x`` and ``test_x`` hold what the network scores (tiles for tiled stages),
    ``tiles`` per image.
    """

    spec: InputSpec
    frame_spec: InputSpec
    plan: StagePlan
    tiles: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: np.ndarray | None
    class_names: list[str]
    label_source: dict[str, Any]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdedgeError(
            "--device cuda was asked for but no CUDA GPU is visible", "use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise AdedgeError(f"--device {name} is not a device", "use auto, cpu or cuda") from None


def subclass_labels(
    method: Method, dataset: DataSet, use_weak: bool, images: np.ndarray, seed: int
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Labels for the method's latent classifier: ground truth, or weak k-means labels."""
    labels = np.concatenate([dataset.train.labels, dataset.val.labels])
    if use_weak:
        clusters = weak_labels(images, seed=seed)
        names = [f"cluster{i}" for i in range(clusters.clusters)]
        return clusters.labels, names, {"source": "weak (k-means)", **clusters.summary()}
    if method.info.needs_subclasses and not dataset.has_subclasses:
        raise DataError(
            f"'{dataset.spec}' has a single normal class ({', '.join(dataset.class_names)}), but "
            f"{method.name} learns sub-classes of the normal data",
            "add --weak-labels to derive them by k-means clustering (the paper's Y-GAN*), "
            "or give one sub-folder per normal sub-class",
        )
    return labels, list(dataset.class_names), {"source": "ground truth sub-classes"}


def prepare(dataset: DataSet, options: TrainOptions, method: Method, plan: StagePlan) -> Prepared:
    channels = 1 if dataset.colour == "gray" else 3
    norm = {"colour": dataset.colour, "mean": (0.5,) * channels, "std": (0.5,) * channels}
    frame_spec = InputSpec(plan.frame_size, plan.frame_size, **norm)
    spec = InputSpec(plan.input_size, plan.input_size, **norm)
    train_x = prepare_batch(dataset.train.images, frame_spec)
    val_x = prepare_batch(dataset.val.images, frame_spec)
    labels, names, source = subclass_labels(
        method, dataset, options.weak_labels, np.concatenate([train_x, val_x]), options.seed
    )
    val_y = torch.from_numpy(labels[len(train_x) :])
    tiles = tiles_per_image(plan.frame_size, plan)
    test = dataset.test
    test_x = None
    if test is not None:
        test_x = grid_tiles(torch.from_numpy(prepare_batch(test.images, frame_spec)), plan)
    return Prepared(
        spec=spec,
        frame_spec=frame_spec,
        plan=plan,
        tiles=tiles,
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(labels[: len(train_x)]),
        val_x=grid_tiles(torch.from_numpy(val_x), plan),
        val_y=val_y.repeat_interleave(tiles),
        test_x=test_x,
        test_y=None if test is None else test.labels,
        class_names=names,
        label_source=source,
    )
