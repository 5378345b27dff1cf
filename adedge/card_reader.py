"""Reading a card: strict, and one line for every problem.

Every field the runtime uses is type-, finiteness- and range-checked, and any problem is one
:class:`~adedge.errors.BundleError` line naming the field (e.g. ``stages.global.weight``) and
the fix. Every file a card names must lie inside the bundle folder (no absolute path, no
``..``; links are checked by :func:`adedge.bundle.bundle_file`), checked from its text before
the file is looked at, so a card can neither load nor probe files elsewhere; every graph
carries its sha256. Older card versions are upgraded by :func:`migrate` before reading. The
JSON literals ``NaN``/``Infinity`` parse (export may write NaN into ``metrics``, e.g. an
INT8 parity rho); every number the runtime reads must be finite.

The field checks are :mod:`adedge.card_fields`, the version steps :mod:`adedge.card_migrations`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adedge.card import (
    CARD_NAME,
    DEFAULT_ENGINE_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    FORMAT_VERSION,
    MAX_AREA,
    MAX_ENGINE_BATCH,
    MAX_NORMALISATION,
    MAX_SIDE,
    MAX_TILES_PER_FRAME,
    MAX_WORKSPACE_MIB,
    MIN_STD,
    PADDINGS,
    PRECISIONS,
    REDUCTIONS,
    STAGE_NAME,
    TILE_ORDERS,
    Card,
    EngineSpec,
    GraphFile,
    PixelThreshold,
    StageSpec,
    ThresholdSpec,
    TilingSpec,
    show_value,
    tile_count,
)
from adedge.card_fields import FieldReader
from adedge.card_migrations import MIGRATIONS
from adedge.errors import BundleError
from adedge.formats import ALWAYS_WRITTEN, ENGINE_PRECISIONS, Precision
from adedge.preprocess import COLOURS, RESIZE_POLICY, InputSpec

MAX_CARD_BYTES = 16 << 20  # cards are a few KiB; a bigger file is refused before parsing


class _CardReader(FieldReader):
    """Reads a card dict, raising a BundleError that names the offending field.

    Every field the runtime uses is checked for type, finiteness and range; ``training`` and
    ``metrics`` must be objects and are carried as written; unknown keys are ignored.
    """

    def graphs(self, data: dict, path: str) -> dict[str, GraphFile]:
        """precision -> GraphFile: the FP32 graph always, others where exported."""
        graphs = self.get(data, "graphs", dict, path)
        for precision in graphs:
            if precision not in PRECISIONS:
                raise self.fail(
                    path,
                    f"names a precision {show_value(precision)}: one of {', '.join(PRECISIONS)}",
                )
        if ALWAYS_WRITTEN not in graphs:
            raise self.fail(
                f"{path}.{ALWAYS_WRITTEN}", "is missing: every stage has its FP32 graph"
            )
        read = {}
        for precision in PRECISIONS:
            if precision not in graphs:
                continue
            where = f"{path}.{precision}"
            entry = self.get(graphs, precision, dict, where)
            read[precision] = GraphFile(
                self.file_name(entry, "file", f"{where}.file"),
                self.sha256(entry, "sha256", f"{where}.sha256"),
            )
        return read

    def input_spec(self, data: dict, path: str) -> InputSpec:
        colour = self.word(data, "colour", COLOURS, f"{path}.colour")
        channels = 1 if colour == "gray" else 3
        declared = self.get(data, "channels", int, f"{path}.channels", default=channels)
        if declared != channels:
            raise self.fail(
                f"{path}.channels", f"is {declared} but colour '{colour}' has {channels}"
            )
        limit = MAX_NORMALISATION
        mean = self.numbers(data, "mean", f"{path}.mean", channels, -limit, limit)
        std = self.numbers(data, "std", f"{path}.std", channels, MIN_STD, limit)
        return InputSpec(
            height=self.count(data, "height", f"{path}.height", MAX_SIDE),
            width=self.count(data, "width", f"{path}.width", MAX_SIDE),
            colour=colour,
            mean=mean,
            std=std,
            resize=self.word(
                data, "resize", (RESIZE_POLICY,), f"{path}.resize", default=RESIZE_POLICY
            ),
        )

    def tiling(self, data: dict | None, path: str) -> TilingSpec | None:
        if data is None:
            return None
        resize_to = self.get(data, "resize_to", list, f"{path}.resize_to")
        sides_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in resize_to
        )
        if len(resize_to) != 2 or not sides_ok:
            raise self.fail(
                f"{path}.resize_to",
                f"must be [height, width], each from 1 to {MAX_SIDE} (got {show_value(resize_to)})",
            )
        tile = self.count(data, "tile", f"{path}.tile", MAX_SIDE)
        if tile > min(resize_to):
            raise self.fail(
                f"{path}.tile", f"must fit in resize_to ({tile} > {min(resize_to)} pixels)"
            )
        stride = self.count(data, "stride", f"{path}.stride", MAX_SIDE)
        if stride > tile:
            raise self.fail(f"{path}.stride", f"must not exceed the tile ({stride} > {tile})")
        spec = TilingSpec(
            (resize_to[0], resize_to[1]),
            tile,
            stride,
            self.word(data, "padding", PADDINGS, f"{path}.padding"),
            self.word(data, "order", TILE_ORDERS, f"{path}.order", default=TilingSpec.order),
        )
        tiles = tile_count(spec)
        if tiles > MAX_TILES_PER_FRAME:
            raise self.fail(
                path,
                f"makes {tiles} tiles per frame, more than {MAX_TILES_PER_FRAME}",
                "use a larger tile or stride, or a smaller resize_to, and re-export",
            )
        return spec

    def engine(self, data: dict | None, path: str) -> EngineSpec | None:
        if data is None:
            return None
        precision = self.word(
            data, "precision", ENGINE_PRECISIONS, f"{path}.precision", default=EngineSpec.precision
        )
        sizes = {
            "max_batch": (MAX_ENGINE_BATCH, DEFAULT_ENGINE_MAX_BATCH),
            "opt_batch": (MAX_ENGINE_BATCH, EngineSpec.opt_batch),
            "workspace_mib": (MAX_WORKSPACE_MIB, DEFAULT_WORKSPACE_MIB),
        }
        values = {
            key: self.count(data, key, f"{path}.{key}", limit, default=default)
            for key, (limit, default) in sizes.items()
        }
        if values["opt_batch"] > values["max_batch"]:
            raise self.fail(f"{path}.opt_batch", "must not exceed max_batch")
        layers = self.get(data, "fp32_layers", list, f"{path}.fp32_layers", default=[])
        if not all(isinstance(name, str) and name for name in layers):
            raise self.fail(f"{path}.fp32_layers", "must hold node names")
        return EngineSpec(precision=Precision(precision), fp32_layers=tuple(layers), **values)

    def stage(self, name: str, data: dict) -> StageSpec:
        path = f"stages.{name}"
        outputs = self.get(data, "outputs", list, f"{path}.outputs")
        for output in outputs:
            if not isinstance(output, str) or not output:
                raise self.fail(
                    f"{path}.outputs", f"must hold output names (got {show_value(output)})"
                )
        if len(set(outputs)) != len(outputs):
            raise self.fail(f"{path}.outputs", "names an output twice")
        if "score" not in outputs:
            raise self.fail(f"{path}.outputs", "must include 'score'")
        weight = self.number(data, "weight", f"{path}.weight", default=1.0)
        if weight < 0:
            raise self.fail(f"{path}.weight", f"must not be negative (got {weight:g})")
        return StageSpec(
            name=name,
            graphs=self.graphs(data, f"{path}.graphs"),
            input_name=self.text(data, "input_name", f"{path}.input_name"),
            input=self.input_spec(self.get(data, "input", dict, f"{path}.input"), f"{path}.input"),
            outputs=tuple(outputs),
            tiling=self.tiling(
                self.get(data, "tiling", dict, f"{path}.tiling", default=None), f"{path}.tiling"
            ),
            reduce=self.word(data, "reduce", REDUCTIONS, f"{path}.reduce", default="max"),
            weight=weight,
            engine=self.engine(
                self.get(data, "engine", dict, f"{path}.engine", default=None), f"{path}.engine"
            ),
            nchwc=self.get(data, "nchwc", bool, f"{path}.nchwc", default=True),
        )

    def pixel(self, data: dict | None, path: str) -> PixelThreshold | None:
        """``threshold.pixel`` (None: absent, as in cards of older exports: no pixel
        decisions)."""
        if data is None:
            return None
        percentile = self.number(data, "percentile", f"{path}.percentile")
        if not 0 < percentile <= 100:
            raise self.fail(
                f"{path}.percentile", f"must be above 0 and at most 100 (got {percentile:g})"
            )
        frame = self.get(data, "frame", list, f"{path}.frame")
        sides_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in frame
        )
        if len(frame) != 2 or not sides_ok:
            raise self.fail(
                f"{path}.frame",
                f"must be [height, width], each from 1 to {MAX_SIDE} (got {show_value(frame)})",
            )
        return PixelThreshold(
            value=self.number(data, "value", f"{path}.value"),
            percentile=percentile,
            min_area=self.count(data, "min_area", f"{path}.min_area", MAX_AREA),
            frame=(frame[0], frame[1]),
            detail=self.text(data, "detail", f"{path}.detail", "", empty=True),
        )

    def card(self, data: Any) -> Card:
        data = migrate(data, self.where)
        stages = self.get(data, "stages", dict, "stages")
        if not stages:
            raise self.fail("stages", "must name at least one stage")
        for name in stages:
            if not isinstance(name, str) or not STAGE_NAME.fullmatch(name):
                raise self.fail(
                    "stages",
                    f"has a stage named {show_value(name)}: a stage name is 1 to 64 letters, "
                    "digits, '_' or '-', starting with a letter or digit",
                )
        threshold = self.get(data, "threshold", dict, "threshold")
        card = Card(
            method=self.text(data, "method", "method"),
            stages=tuple(
                self.stage(name, self.get(stages, name, dict, f"stages.{name}")) for name in stages
            ),
            threshold=ThresholdSpec(
                value=self.number(threshold, "value", "threshold.value"),
                method=self.text(threshold, "method", "threshold.method"),
                detail=self.text(threshold, "detail", "threshold.detail", "", empty=True),
                pixel=self.pixel(
                    self.get(threshold, "pixel", dict, "threshold.pixel", default=None),
                    "threshold.pixel",
                ),
            ),
            training=dict(self.get(data, "training", dict, "training", default={})),
            metrics=dict(self.get(data, "metrics", dict, "metrics", default={})),
            created=self.text(data, "created", "created", default="", empty=True),
            adedge_version=self.text(
                data, "adedge_version", "adedge_version", default="", empty=True
            ),
            format_version=FORMAT_VERSION,
        )
        if card.threshold.pixel is not None and not any("amap" in s.outputs for s in card.stages):
            raise self.fail(
                "threshold.pixel",
                "is set but no stage outputs 'amap': there is no heatmap to threshold",
            )
        return card


def migrate(data: Any, where: Path | str = CARD_NAME) -> dict[str, Any]:
    """The card dict upgraded to :data:`FORMAT_VERSION` (a new dict; ``data`` is untouched).

    Each supported older version ``v`` has one step ``MIGRATIONS[v]`` taking a version-``v``
    dict to version ``v + 1``; the steps run in order. A version that is not an integer, is
    below 1, or is newer than this adedge is refused with a one-line BundleError.
    """
    reader = _CardReader(Path(where))
    if not isinstance(data, dict):
        raise reader.fail("(top level)", "must be a JSON object")
    version = reader.get(data, "format_version", int, "format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: card format {show_value(version)} is newer than this adedge understands "
            f"({FORMAT_VERSION})",
            "upgrade adedge on this machine",
        )
    if version < 1:
        raise reader.fail("format_version", f"must be a card version of at least 1 (got {version})")
    data = dict(data)
    while version < FORMAT_VERSION:
        data = MIGRATIONS[version](data, reader)
        version += 1
        data["format_version"] = version
    return data


def parse_card(data: Any, where: Path | str = CARD_NAME) -> Card:
    """A validated Card from a card dict of any supported version (see :func:`migrate`)."""
    return _CardReader(Path(where)).card(data)


def read_card_json(card_path: Path) -> Any:
    """The JSON of a card file, read with bounds: any problem is one BundleError line."""
    hint = "re-export the bundle with `adedge export`"
    try:
        with open(card_path, "rb") as handle:
            raw = handle.read(MAX_CARD_BYTES + 1)
        if len(raw) > MAX_CARD_BYTES:
            raise BundleError(
                f"{card_path} is larger than {MAX_CARD_BYTES >> 20} MiB: not a card", hint
            )
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        problem = "nested too deeply"
    except UnicodeDecodeError:
        problem = "not UTF-8"
    except json.JSONDecodeError as exc:
        problem = str(exc)
    except ValueError:  # an integer literal beyond Python's digit limit
        problem = "a number literal is too long"
    except OSError as exc:
        raise BundleError(f"{card_path} cannot be read ({exc.strerror or exc})", hint) from None
    raise BundleError(f"{card_path} is not valid JSON ({problem})", hint)
