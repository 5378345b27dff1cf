#!/usr/bin/env bash
# Install adedge's runtime on a Jetson (JetPack 6 or 7) into PREFIX/venv (default /opt/adedge),
# using JetPack's own TensorRT and OpenCV (GStreamer, for csi://) through the system site
# packages, so pip installs neither a TensorRT nor an OpenCV wheel. No torch is needed to
# stream. Run from the repository root:  sudo deploy/jetson/setup-jetpack.sh /opt/adedge
set -euo pipefail

prefix="${1:-/opt/adedge}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"

python3 - <<'PY'
import sys
problems = []
try:
    import tensorrt
    print("TensorRT", tensorrt.__version__)
except Exception as exc:
    problems.append(f"JetPack's TensorRT Python bindings are missing ({exc}): "
                    "sudo apt install python3-libnvinfer  (or nvidia-jetpack)")
try:
    import cv2
    info = cv2.getBuildInformation()
    gst = any("GStreamer" in line and "YES" in line for line in info.splitlines())
    print("OpenCV", cv2.__version__, "GStreamer:", "YES" if gst else "NO")
    if not gst:
        problems.append("this OpenCV has no GStreamer: csi:// cameras will not open "
                        "(a pip opencv wheel is shadowing JetPack's? pip uninstall it)")
except Exception as exc:
    problems.append(f"no system OpenCV ({exc}): sudo apt install nvidia-opencv python3-opencv")
for problem in problems:
    print("warning:", problem, file=sys.stderr)
PY

# CUDA's compiler must be on PATH for pycuda's build
export PATH="/usr/local/cuda/bin:${PATH}"
export CUDA_ROOT=/usr/local/cuda

python3 -m venv --system-site-packages "${prefix}/venv"
"${prefix}/venv/bin/pip" install --upgrade pip wheel
# no [opencv] extra: JetPack's cv2 (with GStreamer) satisfies the runtime
"${prefix}/venv/bin/pip" install "${repo}"
"${prefix}/venv/bin/pip" install "pycuda>=2022.2"
# a pip OpenCV wheel would shadow JetPack's and lose GStreamer: make sure none came along
if "${prefix}/venv/bin/pip" show opencv-python-headless >/dev/null 2>&1; then
    echo "removing the pip OpenCV wheel so JetPack's cv2 (GStreamer) is used"
    "${prefix}/venv/bin/pip" uninstall -y opencv-python-headless
fi
"${prefix}/venv/bin/adedge" --help >/dev/null
echo "installed: ${prefix}/venv/bin/adedge"
