#!/usr/bin/env bash
# Undoes trixie-setup.sh: removes the stack's sevx-test-* domains and files,
# stops its virtlogd and libvirtd (and anything else still running inside the
# chroot, e.g. a QEMU or swtpm a test left behind). Their mount and network
# namespaces, and with them every mount the stack made, go away with the last
# process. Idempotent. The chroot itself stays cached for the next run
# (remove it with SEVX_TRIXIE_PURGE=1).
set -euo pipefail

ROOT=${SEVX_TRIXIE_ROOT:-/var/cache/sev-xform-test/trixie}
STATE_DIR=${SEVX_TRIXIE_STATE_DIR:-/run/sev-xform-test-trixie}
SOCK=$STATE_DIR/libvirt-sock
URI="qemu+unix:///system?socket=$SOCK"
PREFIX=sevx-test-
log() { echo "trixie-teardown.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "trixie-teardown.sh: ERROR: must run as root" >&2; exit 1; }
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"


# --- 1. test domains -----------------------------------------------------------
removed=0
if [ -n "$(chroot_daemon_pid libvirtd)" ] && virsh -c "$URI" version >/dev/null 2>&1; then
  while read -r dom; do
    [[ $dom == "$PREFIX"* ]] || continue
    virsh -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
    if virsh -c "$URI" dominfo "$dom" >/dev/null 2>&1; then
      virsh -c "$URI" undefine "$dom" --nvram --managed-save --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 ||
        virsh -c "$URI" undefine "$dom" --nvram --managed-save >/dev/null 2>&1 ||
        virsh -c "$URI" undefine "$dom" >/dev/null 2>&1 ||
        log "WARNING: could not undefine $dom"
    fi
    removed=$((removed + 1))
  done < <(virsh -c "$URI" list --all --name 2>/dev/null)
fi

# --- 2. daemons, then whatever else still runs inside the chroot ----------------
stopped=()
for name in libvirtd virtlogd; do
  pid=$(chroot_daemon_pid "$name")
  if [ -n "$pid" ]; then stop_process "$name" "$pid"; stopped+=("$name"); fi
done
if [ -d "$ROOT" ]; then
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] || continue
    pid=${p#/proc/}
    log "stopping $(cat "$p/comm" 2>/dev/null) ($pid), still running in $ROOT"
    stop_process "$(cat "$p/comm" 2>/dev/null)" "$pid"; stopped+=("$(cat "$p/comm" 2>/dev/null || echo "$pid")")
  done
fi
rm -rf "$STATE_DIR"

# --- 3. files the tests leave in the chroot -------------------------------------
if [ -d "$ROOT" ]; then
  rm -rf "$ROOT"/tmp/"$PREFIX"* "$ROOT"/var/lib/libvirt/qemu/nvram/"$PREFIX"* \
         "$ROOT"/var/lib/libvirt/qemu/save/"$PREFIX"* "$ROOT"/var/lib/libvirt/images/"$PREFIX"*
fi
purged=no
if [ "${SEVX_TRIXIE_PURGE:-0}" = 1 ] && [ -d "$ROOT" ]; then
  grep -qF " $ROOT" /proc/mounts && { log "ERROR: something is mounted under $ROOT; not purging"; exit 1; }
  rm -rf "$ROOT" "$ROOT.partial"; purged=yes
fi

echo "sev-xform trixie test stack torn down: removed $removed ${PREFIX}* domain(s); stopped: ${stopped[*]:-nothing}; chroot purged: $purged"
