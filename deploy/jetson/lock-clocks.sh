#!/usr/bin/env bash
# Fix a Jetson's clocks before benchmarking, and restore them afterwards.
#   sudo deploy/jetson/lock-clocks.sh lock [MODE]   # MODE: nvpmodel power mode id (default 0 = MAXN
#                                                   # on most modules; `nvpmodel -p --verbose` lists them)
#   sudo deploy/jetson/lock-clocks.sh restore
# Without locked clocks, DVFS ramps the GPU/EMC clocks with load and the first seconds of a
# benchmark run slower than the rest: numbers are neither repeatable nor comparable.
set -euo pipefail

state=/var/lib/adedge/clocks.conf
case "${1:-}" in
lock)
    mkdir -p "$(dirname "${state}")"
    nvpmodel -q | tail -n 1 > "${state}.mode" || true
    jetson_clocks --store "${state}"
    nvpmodel -m "${2:-0}"
    jetson_clocks
    sleep 2
    nvpmodel -q
    jetson_clocks --show
    ;;
restore)
    if [[ -f "${state}" ]]; then
        jetson_clocks --restore "${state}"
    fi
    if [[ -s "${state}.mode" ]]; then
        nvpmodel -m "$(cat "${state}.mode")"
    fi
    nvpmodel -q
    ;;
*)
    echo "usage: sudo $0 lock [MODE] | restore" >&2
    exit 2
    ;;
esac
