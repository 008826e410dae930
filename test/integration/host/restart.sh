#!/usr/bin/env bash
# Restarts the test libvirtd, e.g. so that it finds hook scripts (libvirt looks
# for them only when it starts). It stops the daemon by /run/libvirtd.pid and
# lets setup.sh start it again, pinned to one CPU and re-patched for SEV if the
# restart re-probed QEMU. A daemon setup.sh had not started stays unrecorded,
# so teardown.sh still leaves it running.
# Progress goes to stderr; stdout gets setup.sh's summary line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
STATE=${SEVX_STATE_DIR:-/run/sev-xform-test}/started
log() { echo "restart.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "restart.sh: ERROR: must run as root" >&2; exit 1; }

ours=0
if [ -r "$STATE" ] && grep -qx libvirtd "$STATE"; then ours=1; fi

pid=""
if [ -r /run/libvirtd.pid ]; then
  pid=$(tr -dc 0-9 </run/libvirtd.pid)
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ] || pid=""
fi
if [ -n "$pid" ]; then
  stop_process libvirtd "$pid"
  log "stopped libvirtd $pid"
else
  log "no libvirtd in /run/libvirtd.pid; setup.sh starts one"
fi

bash "$here/setup.sh"

# setup.sh records a daemon it starts as its own; this one was not, before.
if [ "$ours" = 0 ] && [ -n "$pid" ] && [ -w "$STATE" ]; then
  sed -i '/^libvirtd$/d' "$STATE"
fi
