#!/usr/bin/env bash
# Install adedge-stream.service on a Jetson (run with sudo from the repository root, after
# setup-jetpack.sh). Creates the `adedge` user, /etc/adedge/adedge.env (kept if present),
# /var/lib/adedge, enables the unit and starts it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prefix=/opt/adedge
if [[ $EUID -ne 0 ]]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi
if [[ ! -x "${prefix}/venv/bin/adedge" ]]; then
    echo "no ${prefix}/venv/bin/adedge: run deploy/jetson/setup-jetpack.sh ${prefix} first" >&2
    exit 1
fi

id adedge >/dev/null 2>&1 || useradd --system --home /var/lib/adedge --shell /usr/sbin/nologin adedge
usermod -aG video adedge
getent group render >/dev/null && usermod -aG render adedge

install -d -o adedge -g adedge /var/lib/adedge /var/lib/adedge/results /var/lib/adedge/engines
install -d "${prefix}/deploy/jetson" /etc/adedge
install -m 0755 "${here}/run-stream.sh" "${prefix}/deploy/jetson/run-stream.sh"
install -m 0644 "${here}/README.md" "${prefix}/deploy/jetson/README.md"
if [[ ! -f /etc/adedge/adedge.env ]]; then
    install -m 0644 "${here}/adedge.env.example" /etc/adedge/adedge.env
    echo "wrote /etc/adedge/adedge.env: set ADEDGE_MODEL and ADEDGE_SOURCE there"
fi
install -m 0644 "${here}/adedge-stream.service" /etc/systemd/system/adedge-stream.service
systemctl daemon-reload
systemctl enable adedge-stream.service
systemctl restart adedge-stream.service
echo "started: follow it with  journalctl -u adedge-stream -f"
echo "results: /var/lib/adedge/results/latest/{events.jsonl,summary.json}"
