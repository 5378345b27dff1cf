"""Pixel-level decisions at the card's operating point, with and without them.

For each bundle (a texture model whose stages output ``amap``, exported with a pixel
threshold): score the labelled test split of the data it was trained on through the
runtime's Detector, and report image AUROC, pixel AUROC, and at the card's thresholds the
share of defective frames caught (TPR) and of normal frames flagged (FPR), by the image
score alone and with pixel decisions (a region above the pixel threshold larger than the
card's min_area), overall and per defect kind. Thresholds and min_area come from the card
(held-out normal frames); test labels choose nothing.

    python benchmarks/fidelity/pixel_decisions.py --export grass=RUN/best.pt ... \
        --work /tmp/pix --report benchmarks/fidelity/cbigan_pixel_decisions.md
    python benchmarks/fidelity/pixel_decisions.py --bundle grass=BUNDLE ... --report R.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from adedge.data import load
from adedge.metrics import auroc, pixel_auroc
from adedge.runtime.detector import Detector

BATCH = 16


def export(name: str, checkpoint: Path, work: Path) -> Path:
    """Export ``checkpoint`` with this adedge (pixel threshold in the card)."""
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    out = work / f"bundle-{name}"
    if not (out / "adedge.json").exists():
        export_bundle(ExportOptions([checkpoint], out), log=print)
    return out


def measure(name: str, bundle: Path) -> dict:
    detector = Detector(bundle, threads=1)
    pixel = detector.pixel
    if pixel is None:
        raise SystemExit(f"{bundle}: the card has no pixel threshold (re-export it)")
    spec = detector.card.training["data"]["data"]
    test = load(spec).test
    scores, maps, largest = [], [], []
    flagged_by_region = []
    for i in range(0, len(test), BATCH):
        part, part_maps, _ = detector.score_images_with_maps(test.images[i : i + BATCH])
        scores.extend(part.tolist())
        for amap in part_maps:
            regions = detector.regions(amap)
            flagged_by_region.append(bool(regions))
            largest.append(regions[0].area if regions else 0)
        maps.extend(part_maps)
    pixel_auc = pixel_auroc(maps, test.masks) if test.masks else None
    labels = np.asarray(test.labels).astype(bool)
    return summarise(
        name,
        bundle,
        spec,
        detector,
        np.asarray(scores),
        labels,
        np.asarray(flagged_by_region),
        list(test.kinds),
        pixel_auc,
    )


def measure_stream(name: str, bundle: Path, uri: str, frames: int) -> dict:
    """The same decisions on a synthetic stream (``synthetic:texture=...``) whose defect
    frames are known (no masks: no pixel AUROC)."""
    from adedge.defects import DEFECT_KINDS
    from adedge.runtime.sources import open_source

    detector = Detector(bundle, threads=1)
    source = open_source(uri, max_frames=frames)
    scene = source.scene
    scores, labels, region_flags, kinds = [], [], [], []
    for frame in source:
        if not hasattr(frame, "image"):
            continue
        (result,) = detector.score_frames([frame.image])
        scores.append(result.score)
        labels.append(bool(frame.truth))
        region_flags.append(bool(result.regions))
        k = (frame.index - scene.defect_first) // scene.defect_every
        kinds.append(DEFECT_KINDS[k % len(DEFECT_KINDS)] if frame.truth else "good")
    source.close()

    scores_a, labels_a = np.asarray(scores), np.asarray(labels)
    return summarise(
        name, bundle, uri, detector, scores_a, labels_a, np.asarray(region_flags), kinds, None
    )


def summarise(name, bundle, data, detector, scores_a, labels, regions_a, kinds, pixel_auc):
    by_image = scores_a > detector.threshold
    with_pixel = by_image | regions_a

    def rates(flags: np.ndarray) -> dict:
        return {"tpr": float(flags[labels].mean()), "fpr": float(flags[~labels].mean())}

    per_kind = defaultdict(lambda: [0, 0, 0])  # kind -> [frames, caught by image, with pixel]
    for kind, label, a, b in zip(kinds, labels, by_image, with_pixel, strict=True):
        if label:
            per_kind[kind][0] += 1
            per_kind[kind][1] += int(a)
            per_kind[kind][2] += int(b)
    pixel = detector.pixel
    return {
        "name": name,
        "bundle": str(bundle),
        "data": data,
        "test_frames": int(len(labels)),
        "defective": int(labels.sum()),
        "image_auroc": auroc(labels.astype(int), scores_a),
        "pixel_auroc": pixel_auc,
        "threshold": detector.threshold,
        "pixel_threshold": pixel.value,
        "min_area": pixel.threshold.min_area,
        "frame": list(pixel.threshold.frame),
        "image_only": rates(by_image),
        "with_pixel": rates(with_pixel),
        "pixel_only": rates(regions_a),
        "per_kind": {
            k: {"frames": v[0], "image": v[1], "pixel": v[2]} for k, v in per_kind.items()
        },
    }


def write_report(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        "# Pixel-level decisions at the card's operating point",
        "",
        "Thresholds from the card (held-out normal frames: image threshold = 99% quantile of "
        "frame scores; pixel threshold = 99.9th percentile of heatmap pixels, min_area = 99% "
        "quantile of each frame's largest region above it, at least 0.05% of the frame). "
        "Test labels choose nothing. Caught = defective test frames flagged (TPR); false "
        "alarms = normal test frames flagged (FPR).",
        "",
        "| model | image AUROC | pixel AUROC | thr / pixel thr / min_area | caught: image | "
        "caught: + pixel | caught: pixel alone | false alarms: image | false alarms: + pixel "
        "| false alarms: pixel alone |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pixel = "n/a" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        lines.append(
            f"| {r['name']} | {r['image_auroc']:.3f} | {pixel} | {r['threshold']:.4g} / "
            f"{r['pixel_threshold']:.4g} / {r['min_area']} px | "
            f"{r['image_only']['tpr']:.3f} | {r['with_pixel']['tpr']:.3f} | "
            f"{r['pixel_only']['tpr']:.3f} | {r['image_only']['fpr']:.3f} | "
            f"{r['with_pixel']['fpr']:.3f} | {r['pixel_only']['fpr']:.3f} |"
        )
    lines += ["", "Defective frames caught per defect kind (image score alone / with pixel):", ""]
    kinds = sorted({k for r in rows for k in r["per_kind"]})
    lines += ["| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for r in rows:
        cells = []
        for kind in kinds:
            k = r["per_kind"].get(kind)
            cells.append("-" if k is None else f"{k['image']}/{k['pixel']} of {k['frames']}")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{command}`", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def pairs(items: list[str]) -> list[tuple[str, Path]]:
    return [(item.split("=", 1)[0], Path(item.split("=", 1)[1])) for item in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", default=[], help="NAME=BUNDLE")
    parser.add_argument("--export", action="append", default=[], help="NAME=CHECKPOINT")
    parser.add_argument(
        "--stream", action="append", default=[], help="NAME=URI (synthetic, with truth)"
    )
    parser.add_argument("--frames", type=int, default=200, help="frames per --stream")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pixel-decisions"))
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    bundles = pairs(args.bundle)
    for name, checkpoint in pairs(args.export):
        bundles.append((name, export(name, checkpoint, args.work)))
    found = dict(bundles)
    streams = []
    for item in args.stream:
        name, uri = item.split("=", 1)
        streams.append((f"{name} on {uri}", found[name], uri))
    units = [(n, b, None) for n, b in bundles] + streams
    rows = []
    for name, bundle, uri in units:
        if uri is None:
            rows.append(measure(name, bundle))
        else:
            rows.append(measure_stream(name, bundle, uri, args.frames))
        keys = ("name", "image_only", "with_pixel", "pixel_only")
        print(json.dumps({k: rows[-1][k] for k in keys}))
        command = "python benchmarks/fidelity/pixel_decisions.py " + " ".join(
            [f"--bundle {n}={b}" for n, b in pairs(args.bundle)]
            + [f"--export {n}={c}" for n, c in pairs(args.export)]
            + [f"--stream {item}" for item in args.stream]
            + ([f"--frames {args.frames}"] if args.stream else [])
            + [f"--report {args.report}"]
        )
        write_report(rows, args.report, command)


if __name__ == "__main__":
    main()
