#!/usr/bin/env bash
# Build the TensorRT engines of a bundle on this device (no torch needed), before the first
# stream, so the service starts scoring at once:
#   deploy/jetson/build-engines.sh /opt/adedge/models/ygan [fp16|fp32]
# Engines are cached in <bundle>/engines (or $ADEDGE_ENGINE_DIR/<bundle name> if the bundle is
# read-only) and rebuilt automatically when the graph, GPU, TensorRT, precision or batch changes.
set -euo pipefail

bundle="${1:?usage: $0 BUNDLE [fp16|fp32]}"
precision="${2:-}"
python="${ADEDGE_PYTHON:-/opt/adedge/venv/bin/python}"

"${python}" - "${bundle}" "${precision}" <<'PY'
import sys

from adedge.bundle import load_bundle
from adedge.errors import AdedgeError
from adedge.export.tensorrt_build import ensure_engine

bundle, precision = sys.argv[1], sys.argv[2] or None
try:
    for stage in load_bundle(bundle).card.stages:
        result = ensure_engine(bundle, stage, precision=precision, log=print)
        state = "built" if result.built else "up to date"
        print(f"{stage.name}: {result.engine} ({state}; {result.plan.describe()})")
except AdedgeError as exc:
    print(f"error: {exc.one_line()}", file=sys.stderr)
    sys.exit(2)
PY
