#!/usr/bin/env bash
# Debian packages the real-client integration tests need (spice-server/tests/spice_gtk.rs):
# spice-gtk's spicy-screenshot, its GObject-introspection API for the Python probe under
# tests/clients/, and Xvfb for GTK tools that insist on a display; spice-html5 + websockify +
# chromium for the browser-console test (vmm-glue/tests/spice_html5.rs, whose CDP probe in
# tests/clients/html5/ needs only Python's standard library). Idempotent: packages
# already present are skipped without touching the network.
set -euo pipefail

# libpixman-1-dev: spice-server's canvas links pixman (the pixman crate).
# The Linux test guest (scripts/build-test-guest.sh, vmm-glue/tests/linux_boot.rs): gcc +
# libc6-dev build its static KMS program, cpio packs the initramfs, kmod's depmod resolves
# qxl.ko's module dependencies, qemu-system-x86 validates the image under TCG.
pkgs=(spice-client-gtk gir1.2-spiceclientglib-2.0 python3-gi xvfb spice-html5 websockify chromium libpixman-1-dev
    gcc libc6-dev cpio kmod qemu-system-x86)
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-deps: all present (${pkgs[*]})"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
