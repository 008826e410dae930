#!/usr/bin/env bash
# Builds the boot test's guest from Debian packages, offline from anything but
# Debian's archive: the packages are fetched with `apt-get download` and
# unpacked with `dpkg-deb -x`, never installed. No loop device or mount is
# used, so it works in a container.
#
#   build-image.sh [CACHE_DIR]     (default /var/cache/sev-xform-test/guest)
#
# Prints one line on stdout: the folder that holds
#   disk.img     raw GPT disk, one FAT16 EFI system partition:
#                \EFI\BOOT\BOOTX64.EFI (Debian's signed shim), grubx64.efi (Debian's
#                signed GRUB), grub.cfg, vmlinuz (Debian's signed kernel), initrd.img
#   uki.efi      the same kernel, initrd and command line as one unified kernel
#                image (systemd's EFI stub), for the network boot; not signed
#   versions.txt the packages it was built from
# The folder is named after the package versions and this builder's own files,
# so a new kernel or a changed /init builds a new image; older ones are removed.
# Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:-/var/cache/sev-xform-test/guest}
log() { echo "build-image.sh: $*" >&2; }
die() { echo "build-image.sh: ERROR: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb sfdisk mkfs.fat mcopy mmd objcopy gzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (install mtools, dosfstools, fdisk, binutils)"
done

# Modules the guest's /init loads (with their dependencies from modules.dep).
MODULES=(virtio_pci virtio_scsi sd_mod sr_mod virtio_blk virtio_net virtio_balloon
         virtio_console virtio_rng virtio_gpu virtio_input ahci efivarfs)
CMDLINE="console=ttyS0,115200 loglevel=3 panic=5"

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'
}
# "PACKAGE VERSION" per line for the packages that have a candidate, in one apt-cache call.
candidates() {
  apt-cache policy "$@" 2>/dev/null |
    awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} $1 == "Candidate:" && $2 != "(none)" {print p, $2}'
}
resolve_versions() {
  kernel_pkg=$(kernel_package)
  packages=(${kernel_pkg:-linux-image-amd64} busybox-static shim-signed grub-efi-amd64-signed systemd-boot-efi)
  versions=$(candidates "${packages[@]}")
  [ -n "$kernel_pkg" ] && [ "$(grep -c . <<<"$versions")" = ${#packages[@]} ]
}
if ! resolve_versions; then
  log "no package lists for the guest's packages: apt-get update"
  apt-get -o DPkg::Lock::Timeout=900 update >&2
  resolve_versions || die "no installable version of some of ${packages[*]} (linux-image-amd64 depends on '${kernel_pkg}')"
fi
versions+=$'\n'
key=$( { printf '%s' "$versions"; cat "$here/build-image.sh" "$here/init.sh"; } | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/disk.img" ] && [ -f "$out/uki.efi" ] && [ -f "$out/versions.txt" ]; then
  echo "$out"
  exit 0
fi

t0=$EPOCHREALTIME
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

log "downloading ${packages[*]}"
mkdir debs
pinned=()
while read -r p v; do [ -n "$p" ] && pinned+=("$p=$v"); done <<<"$versions"
# Package lists older than the archive name versions it no longer has: update once and retry.
# The versions name the image, so the retry starts over.
if ! (cd debs && apt-get download "${pinned[@]}") >&2; then
  [ -z "${SEVX_GUEST_LISTS_UPDATED:-}" ] || die "apt-get download ${pinned[*]} failed"
  log "apt-get download failed; updating the package lists and starting over"
  apt-get -o DPkg::Lock::Timeout=900 update >&2
  cd /
  rm -rf "$work"
  trap - EXIT
  SEVX_GUEST_LISTS_UPDATED=1 exec bash "$here/build-image.sh" "$cache"
fi
for deb in debs/*.deb; do dpkg-deb -x "$deb" root; done

busybox=root/bin/busybox
kver=$(ls root/lib/modules)
[ "$(echo "$kver" | wc -l)" = 1 ] || die "expected one kernel in $kernel_pkg, found: $kver"
vmlinuz=root/boot/vmlinuz-$kver
shim=root/usr/lib/shim/shimx64.efi.signed
grub=root/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
stub=root/usr/lib/systemd/boot/efi/linuxx64.efi.stub
for f in "$busybox" "$vmlinuz" "$shim" "$grub" "$stub"; do [ -f "$f" ] || die "$f is not in the packages"; done

# --- initrd: busybox, /init, the modules and what they depend on --------------
log "resolving module dependencies for kernel $kver"
"$busybox" depmod -b root "$kver"
moddir=root/lib/modules/$kver
mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev initrd/tmp "initrd/lib/modules/$kver"
cp "$busybox" initrd/bin/busybox
install -m 0755 "$here/init.sh" initrd/init
declare -A wanted=()
for m in "${MODULES[@]}"; do
  # Module names treat - and _ alike (virtio_gpu is virtio-gpu.ko).
  line=$(grep -E "/${m//[-_]/[-_]}\.ko:" "$moddir/modules.dep" | head -n 1) ||
    die "module $m is not in $kernel_pkg (nor built in: then drop it from MODULES)"
  for f in ${line/:/}; do wanted[$f]=1; done
done
for f in "${!wanted[@]}"; do
  mkdir -p "initrd/lib/modules/$kver/$(dirname "$f")"
  cp "$moddir/$f" "initrd/lib/modules/$kver/$f"
done
cp "$moddir/modules.builtin" "$moddir/modules.order" "initrd/lib/modules/$kver/"
"$busybox" depmod -b initrd "$kver"
(cd initrd && find . | LC_ALL=C sort | "../$busybox" cpio -o -H newc 2>/dev/null) | gzip -9n >initrd.img
log "initrd: ${#wanted[@]} modules, $(stat -c %s initrd.img) bytes"

# --- unified kernel image for the network boot --------------------------------
printf '%s' "$CMDLINE" >cmdline.txt
printf 'ID=debian\nNAME="sev-xform boot test"\n' >osrel.txt
objcopy \
  --add-section .osrel=osrel.txt --change-section-vma .osrel=0x20000 \
  --add-section .cmdline=cmdline.txt --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd=initrd.img --change-section-vma .initrd=0x3000000 \
  "$stub" uki.efi

# --- the disk: GPT with one FAT16 ESP, filled through mtools ------------------
cat >grub.cfg <<EOF
set timeout=0
set timeout_style=hidden
linux /vmlinuz $CMDLINE
initrd /initrd.img
boot
EOF
esp_mib=40
sectors=$((esp_mib * 2048))
start=2048
mkfs.fat -F 16 -n SEVXBOOT -C esp.img $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i esp.img ::/EFI ::/EFI/BOOT ::/EFI/debian ::/boot ::/boot/grub
mcopy -i esp.img "$shim" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i esp.img "$grub" ::/EFI/BOOT/grubx64.efi
for d in /EFI/BOOT /EFI/debian /boot/grub; do mcopy -i esp.img grub.cfg "::$d/grub.cfg"; done
mcopy -i esp.img "$vmlinuz" ::/vmlinuz
mcopy -i esp.img initrd.img ::/initrd.img
# 2048 sectors before the partition and 33 (backup GPT) after it, rounded up.
truncate -s $(((start + sectors + 2048) * 512)) disk.img
printf 'label: gpt\nstart=%d, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"\n' \
  "$start" "$sectors" | sfdisk --quiet disk.img >&2
dd if=esp.img of=disk.img bs=512 seek="$start" conv=notrunc status=none

mkdir "$work/out"
mv disk.img uki.efi "$work/out/"
printf 'kernel %s\ncmdline %s\n%s' "$kver" "$CMDLINE" "$versions" >"$work/out/versions.txt"
rm -rf "$out"
mv "$work/out" "$out"
# Older builds (other package versions) are no longer needed, nor builds killed midway.
for old in "$cache"/*; do [ "$old" = "$out" ] || rm -rf "$old"; done
find "$cache" -maxdepth 1 -name '.build.*' -mmin +60 -exec rm -rf {} +
log "built $out in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
echo "$out"
