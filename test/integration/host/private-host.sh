#!/usr/bin/env bash
# Runs a command against a private test host: in a mount namespace where /etc,
# /var, /usr/local, /tmp and /run are overlays whose writes land in a scratch
# folder that is deleted afterwards. setup.sh in there starts its own libvirtd
# (the system one, if any, lives in another namespace and is ignored), with its
# own capability cache, qemu.conf, hooks, install.sh targets and test files, so
# such a run shares no libvirt state with the machine and needs no lock.
# Shared still: CPU, memory, /sys (cgroups), the network.
#
#   --without-kvm  /dev in the namespace is a copy without kvm, as on a machine
#                  without KVM (proves setup.sh's KVM emulation on a KVM host;
#                  the real /dev/kvm is never touched)
#   --fresh-caps   start with an empty QEMU capability cache, as a fresh machine
#
#   test/integration/host/private-host.sh --without-kvm --fresh-caps bash -c \
#     'bash test/integration/host/setup.sh && ...; bash test/integration/host/teardown.sh'
#
# Whatever still runs in the namespace when the command ends (a libvirtd that
# teardown.sh did not stop) is stopped, so it cannot outlive the run.
set -euo pipefail
log() { echo "private-host.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 1; }

if [ -z "${SEVX_PRIVATE_HOST_SCRATCH:-}" ]; then
  without_kvm=0 fresh_caps=0
  while [ $# -gt 0 ]; do
    case $1 in
      --without-kvm) without_kvm=1; shift ;;
      --fresh-caps) fresh_caps=1; shift ;;
      --) shift; break ;;
      -*) log "unknown option $1"; exit 2 ;;
      *) break ;;
    esac
  done
  (($#)) || { log "usage: private-host.sh [--without-kvm] [--fresh-caps] COMMAND [ARG...]"; exit 2; }
  # Outside every overlaid tree: overlayfs refuses an upper folder inside its lower one.
  scratch=$(mktemp -d /root/.sevx-private-host.XXXXXX)
  set +e
  unshare --mount --propagation private env SEVX_PRIVATE_HOST_SCRATCH="$scratch" \
    SEVX_PRIVATE_HOST_WITHOUT_KVM=$without_kvm SEVX_PRIVATE_HOST_FRESH_CAPS=$fresh_caps bash "$0" "$@"
  rc=$?
  rm -rf "$scratch"
  exit $rc
fi

scratch=$SEVX_PRIVATE_HOST_SCRATCH
without_kvm=$SEVX_PRIVATE_HOST_WITHOUT_KVM
fresh_caps=$SEVX_PRIVATE_HOST_FRESH_CAPS
unset SEVX_PRIVATE_HOST_SCRATCH SEVX_PRIVATE_HOST_WITHOUT_KVM SEVX_PRIVATE_HOST_FRESH_CAPS

for dir in /etc /var /usr/local /tmp /run; do
  layer=$scratch/${dir//\//_}
  mkdir -p "$layer/upper" "$layer/work"
  mount -t overlay "sevx-private${dir//\//-}" -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
# Nothing of the machine's runtime state: pid files, sockets, the test state.
rm -rf /run/libvirt /run/libvirtd.pid /run/virtlogd.pid /run/sev-xform-test
caps=/var/cache/libvirt/qemu/capabilities
if [ "$fresh_caps" = 1 ] && [ -d "$caps" ]; then rm -rf "${caps:?}"/*; fi

if [ "$without_kvm" = 1 ]; then
  dev=$(mktemp -d /tmp/sevx-private-dev.XXXXXX)
  mount -t tmpfs -o mode=0755,size=1m sevx-private-dev "$dev"
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
  shopt -u dotglob nullglob
  mount --move "$dev" /dev
  rmdir "$dev"
  [ ! -e /dev/kvm ] || { log "ERROR: /dev/kvm is still visible in the namespace"; exit 1; }
fi
ns=$(readlink /proc/self/ns/mnt)
log "private host (mount namespace $ns$([ "$without_kvm" = 1 ] && echo ', no /dev/kvm')$([ "$fresh_caps" = 1 ] && echo ', empty capability cache')): $*"

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
# Other copies of setup.sh/restart.sh on this machine look for "the" system
# libvirtd by name when they find no pid file, and stop it; they skip session
# daemons, which carry --timeout. `--timeout 0` (no idle timeout) makes the
# daemons started in here look like that, so they are left alone.
export SEVX_DAEMON_ARGS="--timeout 0"
set +e
"$@"
