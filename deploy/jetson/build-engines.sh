#!/usr/bin/env bash
# Build the TensorRT engines of a bundle on this device (no torch needed), before the first
# stream, so the service starts scoring at once:
#   deploy/jetson/build-engines.sh /opt/adedge/models/ygan [fp16|fp32]
# Engines are cached in <bundle>/engines (or $ADEDGE_ENGINE_DIR/<bundle name> if the bundle is
# read-only) and rebuilt automatically when the graph, GPU, TensorRT, precision or batch changes.
set -euo pipefail

bundle="${1:?usage: $0 BUNDLE [fp16|fp32]}"
precision="${2:-}"
adedge="${ADEDGE_BIN:-/opt/adedge/venv/bin/adedge}"

exec "${adedge}" engines build --model "${bundle}" ${precision:+--precision "${precision}"}
