#!/usr/bin/env bash
# Start `adedge stream` for the systemd unit: one results folder per start, so a restart never
# overwrites the events of the previous run. Settings come from /etc/adedge/adedge.env.
set -euo pipefail

: "${ADEDGE_MODEL:?set ADEDGE_MODEL in /etc/adedge/adedge.env}"
: "${ADEDGE_SOURCE:=csi://0}"
: "${ADEDGE_BACKEND:=tensorrt}"
: "${ADEDGE_RESULTS:=/var/lib/adedge/results}"
: "${ADEDGE_BIN:=/opt/adedge/venv/bin/adedge}"

run_dir="${ADEDGE_RESULTS}/$(date +%Y%m%dT%H%M%S)"
mkdir -p "${run_dir}"
ln -sfn "${run_dir}" "${ADEDGE_RESULTS}/latest"
export ADEDGE_ENGINE_DIR

# word splitting of ADEDGE_STREAM_ARGS is intended (several options)
# shellcheck disable=SC2086
exec "${ADEDGE_BIN}" stream \
    --model "${ADEDGE_MODEL}" \
    --source "${ADEDGE_SOURCE}" \
    --backend "${ADEDGE_BACKEND}" \
    --headless --quiet \
    --jsonl "${run_dir}/events.jsonl" \
    --summary-json "${run_dir}/summary.json" \
    ${ADEDGE_STREAM_ARGS:-}
