"""What a data set is (``DataSet``, its ``Split``s) and how ``--data`` is spelled
(``parse_spec``: a source and ``DataOptions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adedge.defects import REAL_TEXTURES
from adedge.errors import DataError
from adedge.uri import parse_key_values, split_items

NORMAL_FOLDER = "good"
TEXTURE_FRAME = 128
OPTION_KEYS = ("anomaly", "normal", "seed", "val", "limit", "frame")


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
