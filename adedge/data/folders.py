"""An image folder as a data set: one sub-folder per normal sub-class, or the MVTec-AD /
anomalib layout (``train/good``, ``test/<defect>``, ``ground_truth/<defect>``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from adedge.data.images import IMAGE_SUFFIXES, list_images, read_image
from adedge.data.sets import NORMAL_FOLDER, DataOptions, DataSet, Split
from adedge.errors import DataError


def _read_folder_classes(root: Path) -> tuple[list[np.ndarray], list[int], list[str], list[str]]:
    """Images from ``root/<class>/*`` (or ``root/*`` as one class)."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = [(d.name, list_images(d)) for d in class_dirs]
    groups = [(n, files) for n, files in groups if files]
    if not groups and list_images(root):
        groups = [(root.name, list_images(root))]
    images, labels, names = [], [], []
    for index, (_, files) in enumerate(groups):
        for file in files:
            images.append(read_image(file))
            labels.append(index)
            names.append(str(file))
    return images, labels, [n for n, _ in groups], names


def _colour_of(images: list[np.ndarray]) -> str:
    return "rgb" if any(im.ndim == 3 for im in images) else "gray"


def _suggested_size(images: list[np.ndarray]) -> int:
    side = float(np.median([min(im.shape[:2]) for im in images]))
    return 256 if side >= 256 else 64 if side >= 64 else 32


def load_folder(spec: str, root: Path, options: DataOptions) -> DataSet:
    if not root.is_dir():
        raise DataError(
            f"data '{spec}' is neither a built-in set (digits, fmnist) nor a folder",
            "pass an image folder, or digits:anomaly=N / fmnist:anomaly=N",
        )
    mvtec = (root / "train").is_dir()
    train_root = root / "train" if mvtec else root
    images, labels, class_names, names = _read_folder_classes(train_root)
    if not images:
        raise DataError(
            f"no images found in '{train_root}'",
            f"put {'/'.join(IMAGE_SUFFIXES[:3])} files in one sub-folder per normal class, "
            "or use the MVTec layout train/good, test/<defect>",
        )
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(options.val * len(images)))) if len(images) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    if options.limit is not None:
        train_idx = train_idx[: options.limit]
    label_array = np.asarray(labels, dtype=np.int64)

    def split(idx: np.ndarray) -> Split:
        return Split([images[i] for i in idx], label_array[idx], [names[i] for i in idx])

    test = _read_test_folder(root / "test") if (root / "test").is_dir() else None
    return DataSet(
        spec=spec,
        name=root.name,
        colour=_colour_of(images),
        class_names=class_names,
        train=split(train_idx),
        val=split(val_idx),
        test=test,
        suggested_size=_suggested_size(images),
        protocol="MVTec/Folder layout" if mvtec else "image folder, one sub-folder per class",
    )


def _read_test_folder(test_root: Path) -> Split | None:
    images, labels, names, kinds, masks = [], [], [], [], []
    truth_root = test_root.parent / "ground_truth"
    for folder in sorted(d for d in test_root.iterdir() if d.is_dir()):
        for file in list_images(folder):
            image = read_image(file)
            images.append(image)
            labels.append(0 if folder.name == NORMAL_FOLDER else 1)
            names.append(str(file))
            kinds.append(folder.name)
            masks.append(_mvtec_mask(truth_root, folder.name, file, image.shape[:2]))
    if not images:
        return None
    known = any(m is not None for m in masks)
    return Split(images, np.asarray(labels, np.int64), names, kinds, masks if known else None)


def _mvtec_mask(
    truth_root: Path, defect: str, file: Path, shape: tuple[int, ...]
) -> np.ndarray | None:
    """MVTec's ``ground_truth/<defect>/<stem>_mask.png`` (all-clear for ``good``)."""
    if defect == NORMAL_FOLDER:
        return np.zeros(shape, bool)
    path = truth_root / defect / f"{file.stem}_mask.png"
    if not path.is_file():
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return None
    if mask.shape != shape:
        mask = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST)
    return mask > 127
