#!/usr/bin/env bash
# Runs a command as on a machine without /dev/kvm, to prove the test host's KVM
# emulation where the machine has real KVM: inside a private mount namespace
# whose /dev is a copy of this one without kvm. Nothing outside the namespace
# changes (the real /dev/kvm is never moved), and whatever is still running in
# the namespace when the command ends (a libvirtd that saw the fake /dev) is
# stopped, so it cannot outlive the run.
# With --fresh-caps, libvirt's QEMU capability cache is an empty tmpfs in the
# namespace too, as on a fresh machine: libvirt probes QEMU from scratch.
#   flock /tmp/sevx-libvirt.lock test/integration/host/without-kvm.sh [--fresh-caps] bash -c '...'
set -euo pipefail
log() { echo "without-kvm.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 1; }
fresh_caps=0
if [ "${1:-}" = --fresh-caps ]; then fresh_caps=1; shift; fi
(($#)) || { log "usage: without-kvm.sh [--fresh-caps] COMMAND [ARG...]"; exit 2; }

if [ -z "${SEVX_WITHOUT_KVM_INNER:-}" ]; then
  # setup.sh in here must start its own libvirtd, which sees the fake /dev; a
  # system libvirtd already running out here would be used (or stopped) instead.
  # Daemons in a chroot or another mount namespace are someone else's: ignored.
  for f in /proc/[0-9]*/comm; do
    [ "$(cat "$f" 2>/dev/null)" = libvirtd ] || continue
    pid=${f#/proc/}; pid=${pid%/comm}
    [ "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" = 0 ] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--timeout' && continue
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = / ] || continue
    [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$(readlink /proc/self/ns/mnt)" ] || continue
    log "ERROR: the system libvirtd ($pid) is running; stop it (teardown.sh) before hiding /dev/kvm"
    exit 1
  done
  exec unshare --mount --propagation private env SEVX_WITHOUT_KVM_INNER=1 SEVX_WITHOUT_KVM_FRESH_CAPS=$fresh_caps bash "$0" "$@"
fi
unset SEVX_WITHOUT_KVM_INNER
fresh_caps=${SEVX_WITHOUT_KVM_FRESH_CAPS:-0}
unset SEVX_WITHOUT_KVM_FRESH_CAPS

dev=$(mktemp -d /tmp/sevx-without-kvm-dev.XXXXXX)
mount -t tmpfs -o mode=0755,size=1m sevx-without-kvm "$dev"
shopt -s dotglob nullglob
for entry in /dev/*; do
  name=${entry#/dev/}
  [ "$name" = kvm ] && continue
  if mountpoint -q "$entry"; then
    mkdir "$dev/$name"
    mount --rbind "$entry" "$dev/$name"
  else
    cp -a "$entry" "$dev/"
  fi
done
mount --move "$dev" /dev
rmdir "$dev"
[ ! -e /dev/kvm ] || { log "ERROR: /dev/kvm is still visible in the namespace"; exit 1; }
if [ "$fresh_caps" = 1 ]; then
  caps=/var/cache/libvirt/qemu/capabilities
  mkdir -p "$caps"
  mount -t tmpfs -o mode=0755,size=64m sevx-without-kvm-caps "$caps"
  log "QEMU capability cache: empty (tmpfs on $caps in the namespace)"
fi
ns=$(readlink /proc/self/ns/mnt)
log "running without /dev/kvm (mount namespace $ns): $*"

# Every process in this namespace except this script (and the subshell that
# lists them): all were started by the command.
leftovers() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
    [ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$ns" ] && echo "$p"
  done
  return 0
}
cleanup() {
  local pids
  pids=$(leftovers)
  [ -n "$pids" ] || return 0
  log "stopping what the command left running in the namespace: $(echo $pids)"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 100); do pids=$(leftovers); [ -n "$pids" ] || return 0; sleep 0.1; done
  kill -KILL $pids 2>/dev/null || true
}
trap cleanup EXIT
set +e
"$@"
rc=$?
exit $rc
