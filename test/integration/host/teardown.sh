#!/usr/bin/env bash
# Undoes setup.sh: removes the sevx-test-* domains and files, stops only the
# daemons setup.sh started, unmounts hugetlbfs if setup.sh mounted it, undoes
# the KVM emulation if setup.sh made one (the plain /dev/kvm, `namespaces = []`,
# and the capability cache that claims KVM), and removes the state. Idempotent.
# The SEV-patched capability cache of a real KVM host and qemu.conf's user/group
# are left in place (libvirt re-validates the cache on its own).
set -euo pipefail

URI=qemu:///system
EMULATOR=/usr/bin/qemu-system-x86_64
CAPS_DIR=/var/cache/libvirt/qemu/capabilities
QEMU_CONF=/etc/libvirt/qemu.conf
PREFIX=sevx-test-
STATE_DIR=${SEVX_STATE_DIR:-/run/sev-xform-test}
STATE=$STATE_DIR/started
log() { echo "teardown.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "teardown.sh: ERROR: must run as root" >&2; exit 1; }
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

started() { [ -f "$STATE" ] && grep -qxF "$1" "$STATE"; }

# pid of the daemon that owns /run/NAME.pid, if it is alive and really NAME
pidfile_pid() {
  local name=$1 pid
  [ -r "/run/$name.pid" ] || return 0
  pid=$(tr -dc 0-9 <"/run/$name.pid")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
  return 0
}

# stop_process, then a line saying so.
stop_pid() {
  stop_process "$1" "$2"
  log "stopped $1 ($2)"
}

removed=0
# --- 1. test domains -------------------------------------------------------
if [ -n "$(pidfile_pid libvirtd)" ] && virsh -c "$URI" version >/dev/null 2>&1; then
  while read -r dom; do
    [[ $dom == "$PREFIX"* ]] || continue
    virsh -c "$URI" destroy "$dom" >/dev/null 2>&1 || true     # running or paused
    if virsh -c "$URI" dominfo "$dom" >/dev/null 2>&1; then     # still defined
      virsh -c "$URI" undefine "$dom" --nvram --managed-save --snapshots-metadata \
            --checkpoints-metadata >/dev/null 2>&1 ||
        virsh -c "$URI" undefine "$dom" --nvram --managed-save >/dev/null 2>&1 ||
        virsh -c "$URI" undefine "$dom" >/dev/null 2>&1 ||
        log "WARNING: could not undefine $dom"
    fi
    removed=$((removed + 1))
  done < <(virsh -c "$URI" list --all --name 2>/dev/null)
else
  log "system libvirtd not running; no domains to undefine"
fi

# --- 2. files the tests leave behind ---------------------------------------
rm -rf /tmp/"$PREFIX"* /var/tmp/"$PREFIX"* /var/lib/libvirt/qemu/nvram/"$PREFIX"* /var/lib/libvirt/qemu/save/"$PREFIX"* \
       /var/lib/libvirt/images/"$PREFIX"*
# Memory cgroups the QEMU acceptance test made (v1 and v2), with any QEMU or
# helper a crashed test left in them.
for cg in /sys/fs/cgroup/memory/"$PREFIX"* /sys/fs/cgroup/"$PREFIX"*; do
  [ -d "$cg" ] || continue
  for pid in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do [ -s "$cg/cgroup.procs" ] || break; sleep 0.1; done
  rmdir "$cg" 2>/dev/null || log "WARNING: could not remove cgroup $cg"
done

# --- 3. daemons and mounts that setup.sh started ----------------------------
stopped=()
for name in libvirtd virtlogd; do
  started "$name" || continue
  pid=$(pidfile_pid "$name")
  if [ -n "$pid" ]; then stop_pid "$name" "$pid"; stopped+=("$name"); fi
done
if started hugetlbfs && grep -qE '^[^ ]+ /dev/hugepages hugetlbfs ' /proc/mounts; then
  if umount /dev/hugepages; then stopped+=(hugetlbfs); else log "WARNING: could not unmount /dev/hugepages"; fi
fi

# --- 4. the KVM emulation ----------------------------------------------------
# Its cache claims KVM with TCG's CPU models: were it left, a libvirt that
# later finds a real /dev/kvm (with matching kernel and CPU) would trust it.
# A libvirtd setup.sh did not start is stopped for this and started again.
if started kvm-file || started qemu-namespaces || started kvm-caps; then
  restart_pid=$(pidfile_pid libvirtd)
  [ -z "$restart_pid" ] || stop_pid libvirtd "$restart_pid"
  if started kvm-file && [ -f /dev/kvm ] && [ ! -c /dev/kvm ]; then rm -f /dev/kvm; stopped+=(kvm-emulation); fi
  if started qemu-namespaces && [ -f "$QEMU_CONF" ]; then
    sed -i -E '/^[[:space:]]*namespaces[[:space:]]*=[[:space:]]*\[[[:space:]]*\][[:space:]]*$/d' "$QEMU_CONF"
    if [ -s "$STATE_DIR/qemu.conf.namespaces" ]; then cat "$STATE_DIR/qemu.conf.namespaces" >>"$QEMU_CONF"; fi
  fi
  if started kvm-caps; then
    { grep -lF "<emulator>$EMULATOR</emulator>" "$CAPS_DIR"/*.xml 2>/dev/null || true; } | while read -r f; do rm -f "$f"; done
  fi
  if [ -n "$restart_pid" ]; then
    # Without our other open files (a lock's fd would be held by the daemon).
    (for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi; done
     LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" exec libvirtd -d) || log "WARNING: could not start libvirtd again"
    log "started libvirtd again (it was not ours)"
  fi
fi

rm -rf "$STATE_DIR"

echo "sev-xform test host torn down: removed $removed ${PREFIX}* domain(s); stopped: ${stopped[*]:-nothing}"
