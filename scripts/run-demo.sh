#!/usr/bin/env bash
# The main job: `qxl-vmm demo`, the demo VMM serving SPICE on 127.0.0.1:5900 with a
# built-in synthetic guest. Installs the one system library the build links
# (libpixman-1-dev, for the canvas) when it is missing, then builds and runs.
# Extra arguments go to `qxl-vmm demo` (e.g. --port 5901, --scene slideshow:DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg-query -W -f='${Status}' libpixman-1-dev 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends libpixman-1-dev
fi
exec cargo run --release -p vmm-glue --bin qxl-vmm -- demo "$@"
