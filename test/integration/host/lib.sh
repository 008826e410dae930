# Sourced by the test-host scripts (setup, teardown, restart and their trixie-
# counterparts) for what they all do the same way. The caller defines log(),
# and for chroot_daemon_pid ROOT and STATE_DIR; sev_caps_patch reads the SEV_*
# settings.

# stop_process NAME PID: SIGTERM, up to 15 s for it to exit, then SIGKILL (and
# half a second for the kernel to reap it). Always returns 0.
stop_process() {
  local name=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name ($pid) ignored SIGTERM for 15s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
}

# chroot_daemon_pid NAME: the pid in $STATE_DIR/NAME.pid, if that process is
# alive, is NAME and runs in the chroot $ROOT (never a daemon of the host's).
chroot_daemon_pid() {
  local f=$STATE_DIR/$1.pid pid
  [ -r "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] &&
    [ "$(readlink "/proc/$pid/root")" = "$ROOT" ] && echo "$pid"
  return 0
}

# sev_caps_patch FILE FLAG...: makes a libvirt QEMU capability cache claim SEV:
# the given QEMU flags (sev-guest, and sev-snp-guest for libvirt >= 10.5) and an
# <sev> element with the emulated host's cbitpos, reducedPhysBits, slots and
# dummy PDH/certificate chain. Replaces what an earlier patch wrote.
sev_caps_patch() {
  local f=$1 flag pdh certchain args=()
  shift
  pdh=$(printf 'sev-xform-test-pdh' | base64 -w0)
  certchain=$(printf 'sev-xform-test-cert-chain' | base64 -w0)
  for flag in "$@"; do args+=(-d "/qemuCaps/flag[@name='$flag']"); done
  args+=(-d /qemuCaps/sev)
  for flag in "$@"; do args+=(-s /qemuCaps -t elem -n flag -i '$prev' -t attr -n name -v "$flag"); done
  args+=(
    -s /qemuCaps -t elem -n sev
    -s /qemuCaps/sev -t elem -n cbitpos -v "$SEV_CBITPOS"
    -s /qemuCaps/sev -t elem -n reducedPhysBits -v "$SEV_REDUCED_PHYS_BITS"
    -s /qemuCaps/sev -t elem -n pdh -v "$pdh"
    -s /qemuCaps/sev -t elem -n certChain -v "$certchain"
    -s /qemuCaps/sev -t elem -n maxGuests -v "$SEV_MAX_GUESTS"
    -s /qemuCaps/sev -t elem -n maxESGuests -v "$SEV_MAX_ES_GUESTS"
  )
  xmlstarlet ed -L "${args[@]}" "$f"
}
