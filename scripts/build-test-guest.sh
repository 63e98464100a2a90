#!/usr/bin/env bash
# Build the Linux test guest of qxl-spice from Debian packages only:
#
#   target/test-guest/vmlinuz          Debian's kernel (the real versioned linux-image-*-amd64
#                                      that the linux-image-amd64 meta package depends on)
#   target/test-guest/vmlinux          the same kernel as an ELF with its PVH entry note (the
#                                      bzImage's compressed payload, decompressed): a VMM can
#                                      enter it directly, without the bzImage decompressor
#   target/test-guest/initramfs.cpio.gz  busybox-static + /init (tests/guest/init) + qxl.ko,
#                                      virtio_mmio.ko, virtio_input.ko and their module
#                                      dependencies + /qxl-kms-test (tests/guest/
#                                      qxl-kms-test.c built with the machine's gcc -static)
#   target/test-guest/cmdline          the suggested kernel command line
#   target/test-guest/manifest         package versions and input hashes (the cache key)
#
# Idempotent and cached: the .debs stay in target/test-guest/debs/, and nothing is rebuilt
# while the package versions, this script and tests/guest/* are unchanged. Reproducible:
# fixed file order, timestamps clamped to SOURCE_DATE_EPOCH, gzip -n.
#
# Needs (scripts/install-test-deps.sh installs them): apt-get/dpkg-deb, gcc + libc6-dev,
# cpio, kmod (depmod, to write the modules.dep that Debian's package leaves to its postinst).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TEST_GUEST_DIR:-$root/target/test-guest}"
src="$root/tests/guest"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
mkdir -p "$out/debs"

log() { echo "build-test-guest: $*" >&2; }

# The versioned kernel package behind the meta package (apt's view of the archive).
meta_depends() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | grep -v unsigned | head -n1
}
kpkg="$(meta_depends || true)"
if [ -z "$kpkg" ]; then
    log "apt knows no linux-image-amd64 yet: apt-get update"
    apt-get update -qq
    kpkg="$(meta_depends)"
fi
kver="$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')"
bbver="$(apt-cache policy busybox-static | sed -n 's/^ *Candidate: //p')"
inputs_hash="$(cat "$0" "$src/init" "$src/qxl-kms-test.c" | sha256sum | cut -c1-16)"
key="kernel=$kpkg $kver busybox-static=$bbver inputs=$inputs_hash gcc=$(gcc -dumpfullversion)"

if [ -f "$out/manifest" ] && [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/vmlinux" ] &&
    [ "$(head -n1 "$out/manifest")" = "$key" ]; then
    log "up to date ($key)"
    exit 0
fi
log "building ($key)"

# 1. The packages (cached by exact file name).
cd "$out/debs"
for p in "$kpkg" busybox-static; do
    if ! ls "${p}"_*.deb >/dev/null 2>&1; then
        log "apt-get download $p"
        apt-get download "$p" 2>&1 | grep -v "couldn't be accessed by user '_apt'" >&2 || true
    fi
done
kdeb="$(ls -1 "${kpkg}"_*.deb | tail -n1)"
bbdeb="$(ls -1 busybox-static_*.deb | tail -n1)"

# 2. Unpack (fresh each build).
work="$out/work"
rm -rf "$work"
mkdir -p "$work/kernel" "$work/busybox" "$work/root"
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bbdeb" "$work/busybox"
uname_r="$(ls "$work/kernel/lib/modules")"
cp "$work/kernel/boot/vmlinuz-$uname_r" "$out/vmlinuz.tmp"

# The ELF vmlinux inside the bzImage: setup_sects (0x1f1), payload_offset (0x248) and
# payload_length (0x24c) locate the compressed payload after the real-mode setup.
u8at() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32at() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
bz="$out/vmlinuz.tmp"
sects="$(u8at "$bz" $((0x1f1)))"
[ "$sects" -eq 0 ] && sects=4
poff="$(u32at "$bz" $((0x248)))"
plen="$(u32at "$bz" $((0x24c)))"
# (payload_length stops short of the end of an xz stream: decompress from the payload's start
# and let the decompressor stop at the end of its first stream.)
payload_cat() { tail -c +$(((sects + 1) * 512 + poff + 1)) "$bz" || true; } # SIGPIPE is fine
magic="$(payload_cat | head -c 4 | od -An -tx1 | tr -d ' ' || true)"
log "bzImage payload: $plen bytes at $poff after $sects setup sectors, magic $magic"
case "$magic" in
fd377a58) payload_cat | xz -dc --single-stream >"$out/vmlinux.tmp" ;;
28b52ffd) payload_cat | zstd -qdc >"$out/vmlinux.tmp" ;;
1f8b*) payload_cat | gzip -dc >"$out/vmlinux.tmp" 2>/dev/null || [ -s "$out/vmlinux.tmp" ] ;;
*) log "unknown bzImage payload compression"; exit 1 ;;
esac
[ "$(head -c 4 "$out/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { log "payload is not an ELF"; exit 1; }

# 3. qxl.ko, virtio_mmio.ko and virtio_input.ko (the input devices `qxl-vmm boot` puts on
#    virtio-mmio windows) with their dependencies, resolved through modules.dep (depmod
#    writes it; Debian's package ships none). modules.dep lists each module's whole
#    dependency closure, dependencies last: load them in reverse order, then the module,
#    each file once.
depmod -b "$work/kernel" "$uname_r"
mdir="$work/kernel/lib/modules/$uname_r"
order=()
for want in qxl virtio_mmio virtio_input; do
    line="$(grep -E "(^|/)${want}\.ko(\.xz|\.zst|\.gz)?:" "$mdir/modules.dep")" || {
        log "no ${want}.ko in $kpkg"
        [ "$want" = qxl ] && exit 1
        continue
    }
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do order+=("${deps[i]}"); done
    order+=("${line%%:*}")
done
mkdir -p "$work/root/lib/modules"
: >"$work/root/modules.load"
for m in "${order[@]}"; do
    name="$(basename "$m")"
    name="${name%.xz}"
    name="${name%.zst}"
    name="${name%.gz}"
    grep -qx "$name" "$work/root/modules.load" && continue
    case "$m" in
    *.ko.xz) xz -dc "$mdir/$m" >"$work/root/lib/modules/$name" ;;
    *.ko.zst) zstd -qdc "$mdir/$m" >"$work/root/lib/modules/$name" ;;
    *.ko.gz) gzip -dc "$mdir/$m" >"$work/root/lib/modules/$name" ;;
    *) cp "$mdir/$m" "$work/root/lib/modules/$name" ;;
    esac
    echo "$name" >>"$work/root/modules.load"
done
log "modules: $(tr '\n' ' ' <"$work/root/modules.load")"

# 4. Userspace: busybox, /init, the KMS test program.
mkdir -p "$work/root/bin" "$work/root/dev" "$work/root/proc" "$work/root/sys" "$work/root/tmp"
cp "$work/busybox/bin/busybox" "$work/root/bin/busybox"
cp "$src/init" "$work/root/init"
chmod 755 "$work/root/init" "$work/root/bin/busybox"
gcc -static -O2 -Wall -Wextra -Werror -o "$work/root/qxl-kms-test" "$src/qxl-kms-test.c"
strip "$work/root/qxl-kms-test"

# 5. Pack: sorted names, clamped times, root-owned, gzip without a timestamp.
(
    cd "$work/root"
    find . -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    find . -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
) | gzip -n -9 >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/vmlinux.tmp" "$out/vmlinux"
echo "console=ttyS0 panic=-1 loglevel=7" >"$out/cmdline"
{
    echo "$key"
    echo "uname_r=$uname_r"
    echo "modules=$(tr '\n' ' ' <"$work/root/modules.load")"
    sha256sum "$out/vmlinuz" "$out/vmlinux" "$out/initramfs.cpio.gz" | sed "s|$out/||"
} >"$out/manifest"
rm -rf "$work"
log "done: $out ($(du -h "$out/initramfs.cpio.gz" | cut -f1) initramfs)"
