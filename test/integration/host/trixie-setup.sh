#!/usr/bin/env bash
# Brings up the second test stack: Debian 13 ("trixie": libvirt 11, QEMU 10,
# OVMF 2025) in a debootstrap chroot beside the machine's own Debian 12 libvirt,
# with its own libvirtd whose QEMU capability cache claims SEV and SEV-SNP.
# The host's libvirtd, /etc/libvirt, /run/libvirt and capability cache are never
# touched. Idempotent: a second run is a quick check. Undo with trixie-teardown.sh
# (the chroot stays cached for the next run).
#
# Isolation: the chroot is built and run inside private mount namespaces
# (unshare -m), so nothing it mounts (/run and /dev tmpfs, /proc, a read-only
# /sys, hugetlbfs) is ever visible in the host's mount table, and vanishes with
# its daemons. Its libvirtd also runs in its own network namespace (unshare
# --net): `virsh domxml-to-native` of a domain with interfaces creates tap
# devices, which must never appear on the host. Clients reach the daemon through
# $STATE_DIR/libvirt-sock, a symlink into the daemon's root
# (/proc/PID/root/run/libvirt/libvirt-sock).
#
# Progress goes to stderr; stdout gets one summary line.
set -euo pipefail

ROOT=${SEVX_TRIXIE_ROOT:-/var/cache/sev-xform-test/trixie}
STATE_DIR=${SEVX_TRIXIE_STATE_DIR:-/run/sev-xform-test-trixie}
SUITE=trixie
TRIES=${SEVX_SEV_PATCH_TRIES:-6}
SEV_CBITPOS=${SEV_CBITPOS:-47}
SEV_REDUCED_PHYS_BITS=${SEV_REDUCED_PHYS_BITS:-1}
SEV_MAX_GUESTS=${SEV_MAX_GUESTS:-15}
SEV_MAX_ES_GUESTS=${SEV_MAX_ES_GUESTS:-0}
# 1: give the chroot a plain-file /dev/kvm and emulate KVM in the capability
# cache even when the host has /dev/kvm (to test the path fresh machines without
# KVM take); default: the real device when there is one.
FAKE_KVM=${SEVX_TRIXIE_FAKE_KVM:-$([ -c /dev/kvm ] && echo 0 || echo 1)}
LIBVIRTD_CPU=${SEVX_LIBVIRTD_CPU:-$(awk '/^Cpus_allowed_list/ {split($2, a, /[-,]/); print a[1]}' /proc/self/status)}
EMULATOR=/usr/bin/qemu-system-x86_64
CAPS_DIR=/var/cache/libvirt/qemu/capabilities
# What the suites need from the stack: the daemon and QEMU driver, virsh and
# virt-xml-validate (libvirt-clients), xmllint, OVMF; SPICE/qxl
# (qemu-system-modules-spice) and virtiofsd, which Debian 13 split out of QEMU;
# swtpm for TPM 2.0 domains. Debian 13 split libvirt's drivers out of
# libvirt-daemon (Debian 12 has them all in it): secret for network disks'
# auth, storage for virt-install (it looks disk paths up through the pool
# APIs), network and nodedev as the Debian 12 daemon has them. virtinst: the
# tests generate Debian 13's domains with its own virt-install (5.0), run
# inside the chroot.
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-secret
          libvirt-daemon-driver-storage libvirt-daemon-driver-network libvirt-daemon-driver-nodedev libvirt-clients
          qemu-system-x86 qemu-system-modules-spice virtiofsd ovmf libxml2-utils swtpm swtpm-tools virtinst)
# the host side: the chroot builder, and the clients the tests run against the stack
HOST_PACKAGES=(debootstrap xmlstarlet libxml2-utils libvirt-clients)
MARKER=$ROOT/.sev-xform-stack

t0=$EPOCHREALTIME
log() { echo "trixie-setup.sh: $*" >&2; }
die() { echo "trixie-setup.sh: ERROR: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }

[ "$(id -u)" = 0 ] || die "must run as root"
for v in SEV_CBITPOS SEV_REDUCED_PHYS_BITS SEV_MAX_GUESTS SEV_MAX_ES_GUESTS TRIES; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ $FAKE_KVM =~ ^[01]$ ]] || die "SEVX_TRIXIE_FAKE_KVM must be 0 or 1"
case $ROOT in /*/*) ;; *) die "SEVX_TRIXIE_ROOT must be an absolute path below a folder (got '$ROOT')";; esac

# --- 1. host tools -----------------------------------------------------------
missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing on the host: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "${missing[@]}" >&2
fi

# The archive this machine already installs from (deb822 .sources first, then
# the one-line format): the first non-security URI.
archive_uri() {
  local uri="" f line types="" uris="" enabled=yes
  # deb822: stanzas separated by blank lines; the first enabled `deb` stanza
  # whose URI is not a security archive
  pick() {
    if [ -z "$uri" ] && [ "$enabled" != no ] && [[ " $types " == *" deb "* ]]; then
      local u; for u in $uris; do [[ $u == *security* ]] || { uri=$u; break; }; done
    fi
    types="" uris="" enabled=yes
  }
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
      case ${line,,} in
        types:*) types=${line#*:} ;;
        uris:*) uris=${line#*:} ;;
        enabled:*) enabled=$(tr -d ' \t' <<<"${line#*:}"); enabled=${enabled,,} ;;
        '') pick ;;
      esac
    done <"$f"
    pick
  done
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) { if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; continue } if ($i !~ /security/) print $i; break } }' /etc/apt/sources.list | head -n1)
  fi
  echo "${SEVX_TRIXIE_MIRROR:-$uri}"
}

# --- 2. the chroot (cached) ----------------------------------------------------
chroot_complete() {
  [ -f "$MARKER" ] && [ -x "$ROOT$EMULATOR" ] && [ -x "$ROOT/usr/sbin/libvirtd" ] || return 1
  local p
  for p in "${PACKAGES[@]}"; do grep -qxF "package $p" "$MARKER" || return 1; done
}

build_chroot() {
  local mirror partial=$ROOT.partial t
  mirror=$(archive_uri)
  [ -n "$mirror" ] || die "no package archive URI found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list (set SEVX_TRIXIE_MIRROR)"
  [ -z "$(chroot_daemon_pid libvirtd)$(chroot_daemon_pid virtlogd)" ] || die "daemons of an incomplete chroot are running: run trixie-teardown.sh first"
  ! grep -qF " $ROOT" /proc/mounts || die "something is mounted under $ROOT on the host: unmount it first"
  log "building a Debian $SUITE chroot in $ROOT from $mirror (about 2 minutes)"
  rm -rf "$partial" "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  t=$EPOCHREALTIME
  # In a private mount namespace: what debootstrap and apt mount inside the
  # chroot (proc, sys) disappears with them even if they are interrupted.
  unshare --mount --propagation private -- bash -euo pipefail -c '
    partial=$1 suite=$2 mirror=$3; shift 3
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$suite" "$partial" "$mirror" >&2
    echo "trixie-setup.sh: debootstrap done" >&2
    # No daemon may start from a maintainer script inside the chroot.
    printf "#!/bin/sh\nexit 101\n" >"$partial/usr/sbin/policy-rc.d"; chmod 755 "$partial/usr/sbin/policy-rc.d"
    mountpoint -q "$partial/proc" || mount -t proc proc "$partial/proc"
    chroot "$partial" apt-get -o DPkg::Lock::Timeout=900 update >&2
    DEBIAN_FRONTEND=noninteractive chroot "$partial" apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "$@" >&2
    chroot "$partial" apt-get clean
  ' trixie-build "$partial" "$SUITE" "$mirror" "${PACKAGES[@]}" || die "building the $SUITE chroot failed (see above)"
  printf 'built %s from %s\n' "$(date -u +%FT%TZ)" "$mirror" >"$partial/.sev-xform-stack"
  for p in "${PACKAGES[@]}"; do echo "package $p" >>"$partial/.sev-xform-stack"; done
  mv "$partial" "$ROOT"
  log "chroot built in $(secs "$t") s"
}

# A cached chroot missing packages (the list grew) only gets them installed.
add_packages() {
  local p want=()
  for p in "${PACKAGES[@]}"; do grep -qxF "package $p" "$MARKER" || want+=("$p"); done
  log "installing into the cached chroot: ${want[*]}"
  unshare --mount --propagation private -- bash -euo pipefail -c '
    root=$1; shift
    mount -t proc proc "$root/proc"
    chroot "$root" apt-get -o DPkg::Lock::Timeout=900 update >&2
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "$@" >&2
    chroot "$root" apt-get clean
  ' trixie-add "$ROOT" "${want[@]}" || die "installing ${want[*]} into $ROOT failed"
  for p in "${want[@]}"; do echo "package $p" >>"$MARKER"; done
}

built=cached
if ! chroot_complete; then
  if [ -f "$MARKER" ] && [ -x "$ROOT$EMULATOR" ] && [ -z "$(chroot_daemon_pid libvirtd)" ]; then
    add_packages; built=updated
  elif [ -f "$MARKER" ] && [ -x "$ROOT$EMULATOR" ]; then
    die "the running $SUITE stack lacks packages: run trixie-teardown.sh, then this again"
  else
    build_chroot; built=built
  fi
fi

# --- 3. configuration inside the chroot ---------------------------------------
# No systemd and no libvirt-qemu user in the chroot: QEMU runs as root. No
# per-domain mount namespace: the stack's own /dev is already private, and
# QEMU's copy of it lacked /dev/kvm here ("Could not access KVM kernel module");
# a plain-file /dev/kvm could not be bind-mounted into it anyway.
conf=$ROOT/etc/libvirt/qemu.conf
mkdir -p "$(dirname "$conf")" "$ROOT/var/log/libvirt" "$ROOT/var/lib/libvirt/qemu/nvram" "$ROOT$CAPS_DIR" "$ROOT/etc/qemu/firmware"
want_conf=$(printf 'user = "root"\ngroup = "root"\nnamespaces = []\n')
conf_changed=0
if [ "$(cat "$conf" 2>/dev/null)" != "$want_conf" ]; then printf '%s\n' "$want_conf" >"$conf"; conf_changed=1; fi

# --- 4. daemons ----------------------------------------------------------------
mkdir -p "$STATE_DIR"
SOCK=$STATE_DIR/libvirt-sock
URI="qemu+unix:///system?socket=$SOCK"

virsh_stack() { virsh -c "$URI" "$@"; }

wait_virsh() {
  for _ in $(seq 150); do
    virsh_stack version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "the $SUITE libvirtd does not answer on $SOCK after 30s (see $ROOT/var/log/libvirt/libvirtd.log)"
}

stop_daemon() {
  local name=$1 pid
  pid=$(chroot_daemon_pid "$name")
  [ -n "$pid" ] || return 0
  stop_process "$name" "$pid"
  rm -f "$STATE_DIR/$name.pid"
}

# Starts virtlogd and libvirtd in a fresh mount + network namespace with the
# chroot's own /run, /dev, /proc and a read-only /sys. The namespace lives as
# long as the daemons do.
start_daemons() {
  local pin=()
  # Like the host's: libvirt re-probes QEMU (dropping our patch) when the host
  # CPUID it reads differs from the cached one, and CPUID carries the APIC id of
  # the CPU the daemon runs on.
  [ "$LIBVIRTD_CPU" = none ] || pin=(taskset -c "$LIBVIRTD_CPU")
  rm -f "$STATE_DIR/libvirtd.pid" "$STATE_DIR/virtlogd.pid"
  "${pin[@]}" unshare --mount --propagation private --net -- bash -euo pipefail -c '
    root=$1 state=$2 fake_kvm=$3
    # The chroot'"'"'s / must be a mount point: libvirt gives each QEMU a private
    # /dev by first making / a slave mount, which fails on a plain folder
    # ("Failed disable mount propagation out of the root filesystem").
    mount --bind "$root" "$root"
    mount -t tmpfs -o mode=755,nosuid run "$root/run"
    mkdir -p "$root/run/lock" "$root/run/libvirt"
    mount -t tmpfs -o mode=755,nosuid,size=64m dev "$root/dev"
    d=$root/dev
    mknod -m 666 "$d/null" c 1 3; mknod -m 666 "$d/zero" c 1 5; mknod -m 666 "$d/full" c 1 7
    mknod -m 666 "$d/random" c 1 8; mknod -m 666 "$d/urandom" c 1 9; mknod -m 666 "$d/tty" c 5 0
    mkdir -p "$d/net" "$d/pts" "$d/shm" "$d/hugepages"
    # tap devices for domxml-to-native: created in this network namespace only
    mknod -m 666 "$d/net/tun" c 10 200
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$d/pts"
    ln -s pts/ptmx "$d/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$d/shm"
    ln -s /proc/self/fd "$d/fd"; ln -s /proc/self/fd/0 "$d/stdin"
    ln -s /proc/self/fd/1 "$d/stdout"; ln -s /proc/self/fd/2 "$d/stderr"
    if [ "$fake_kvm" = 1 ]; then
      # libvirt offers virt type kvm only when /dev/kvm exists; the capability
      # cache patch (below) supplies what QEMU cannot probe without KVM.
      : >"$d/kvm"; chmod 666 "$d/kvm"
    else
      mknod -m 660 "$d/kvm" c "$((16#$(stat -c %t /dev/kvm)))" "$((16#$(stat -c %T /dev/kvm)))"
    fi
    # domains with <memoryBacking><hugepages/> render only with hugetlbfs mounted
    mount -t hugetlbfs hugetlbfs "$d/hugepages" || echo "trixie-setup.sh: WARNING: no hugetlbfs in the chroot" >&2
    mount -t proc proc "$root/proc"
    mount --bind /sys "$root/sys"; mount -o remount,bind,ro "$root/sys"
    ip link set lo up 2>/dev/null || true
    # The daemons must not inherit the caller'"'"'s other open files: under
    # `flock /tmp/sevx-libvirt.lock` they would hold the shared lock as long as they run.
    for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi; done
    # --timeout 0 (never exit when idle, as without it) marks both as not the
    # system daemons for setup.sh versions that look for a root libvirtd or
    # virtlogd without --timeout in /proc and would otherwise stop or use
    # these (seen here).
    LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/virtlogd.log" chroot "$root" virtlogd -d --timeout 0
    LIBVIRT_LOG_OUTPUTS="${SEVX_TRIXIE_LOG_OUTPUTS:-3:file:/var/log/libvirt/libvirtd.log}" \
      LIBVIRT_LOG_FILTERS="${SEVX_TRIXIE_LOG_FILTERS:-}" chroot "$root" libvirtd -d --timeout 0
    for _ in $(seq 100); do
      [ -s "$root/run/libvirtd.pid" ] && [ -s "$root/run/virtlogd.pid" ] && break; sleep 0.1
    done
    cp "$root/run/libvirtd.pid" "$state/libvirtd.pid"; cp "$root/run/virtlogd.pid" "$state/virtlogd.pid"
    if [ "$fake_kvm" = 1 ]; then echo emulated; else echo real; fi >"$state/kvm"
  ' trixie-run "$ROOT" "$STATE_DIR" "$FAKE_KVM" || die "starting the $SUITE daemons failed"
  local pid; pid=$(chroot_daemon_pid libvirtd)
  [ -n "$pid" ] || die "libvirtd -d did not leave a running libvirtd (see $ROOT/var/log/libvirt/libvirtd.log)"
  ln -sfn "/proc/$pid/root/run/libvirt/libvirt-sock" "$SOCK"
  wait_virsh
}

# SEVX_TRIXIE_RESTART=1: restart running daemons, e.g. so that libvirtd finds a
# hook installed into the chroot (libvirt looks for hooks only when it starts).
# Also when the running daemons' /dev/kvm is of the other kind (real or emulated).
kvm_mode=$([ "$FAKE_KVM" = 1 ] && echo emulated || echo real)
kvm_changed=0
[ -z "$(chroot_daemon_pid libvirtd)" ] || [ "$(cat "$STATE_DIR/kvm" 2>/dev/null)" = "$kvm_mode" ] || kvm_changed=1
if { ((conf_changed)) || ((kvm_changed)) || [ "${SEVX_TRIXIE_RESTART:-0}" = 1 ]; } && [ -n "$(chroot_daemon_pid libvirtd)" ]; then
  log "restarting the $SUITE daemons$( ((conf_changed)) && echo " to pick up $conf")$( ((kvm_changed)) && echo " with a $kvm_mode /dev/kvm")"
  stop_daemon libvirtd; stop_daemon virtlogd
fi
if [ -z "$(chroot_daemon_pid libvirtd)" ]; then
  stop_daemon virtlogd
  start_daemons
  log "started the $SUITE libvirtd ($(chroot_daemon_pid libvirtd))"
else
  ln -sfn "/proc/$(chroot_daemon_pid libvirtd)/root/run/libvirt/libvirt-sock" "$SOCK"
fi
wait_virsh

# --- 5. make libvirt 11 believe in SEV, SEV-SNP (and KVM) -----------------------
xpath() { xmllint --xpath "$1" - 2>/dev/null || true; }
domcaps() { virsh_stack domcapabilities --virttype kvm --machine q35 2>/dev/null || true; }

caps_ok() {
  local caps; caps=$(domcaps)
  [ "$(xpath "string(//features/sev/@supported)" <<<"$caps")" = yes ] &&
  [ "$(xpath "string(//features/sev/cbitpos)" <<<"$caps")" = "$SEV_CBITPOS" ] &&
  [ "$(xpath "string(//features/sev/reducedPhysBits)" <<<"$caps")" = "$SEV_REDUCED_PHYS_BITS" ] &&
  [ "$(xpath "string(//launchSecurity/@supported)" <<<"$caps")" = yes ] &&
  [ "$(xpath "count(//launchSecurity/enum[@name='sectype']/value[.='sev'])" <<<"$caps")" = 1 ] &&
  [ "$(xpath "count(//launchSecurity/enum[@name='sectype']/value[.='sev-snp'])" <<<"$caps")" = 1 ]
}

caps_file() {
  { grep -lF "<emulator>$EMULATOR</emulator>" "$ROOT$CAPS_DIR"/*.xml 2>/dev/null || true; } | head -n1
}

host_cpu_signature() {
  awk -F': *' '/^vendor_id/ && !v {v=$2} /^model name/ && !n {n=$2} /^cpu family/ && !f {f=$2}
    /^model[ \t]*:/ && m == "" {m=$2} /^stepping/ && s == "" {s=$2}
    END {printf "%s, %s, family: %s, model: %s, stepping: %s", v, n, f, m, s}' /proc/cpuinfo
}

patch_caps() {
  local f=$1
  sev_caps_patch "$f" sev-guest sev-snp-guest
  [ "$FAKE_KVM" = 1 ] || return 0
  # Without a working /dev/kvm QEMU was probed with TCG only: claim KVM with
  # the TCG data (running-converted-guests.md), so kvm-typed domains define.
  # With KVM usable libvirt also checks the kernel, the CPU signature and the
  # microcode version ("microcode version changed (16777317 vs 0)" otherwise).
  local kv sig microcode
  kv="$(uname -r) $(uname -v)"; sig=$(host_cpu_signature)
  microcode=$(awk -F': *' '/^microcode/ {print $2; exit}' /proc/cpuinfo)
  microcode=$(( ${microcode:-0} ))
  xmlstarlet ed -L \
    -d "/qemuCaps/flag[@name='kvm']" -d "/qemuCaps/*[@type='kvm']" \
    -d /qemuCaps/kernelVersion -d /qemuCaps/hostCPUSignature -d /qemuCaps/microcodeVersion \
    -s /qemuCaps -t elem -n flag -i '$prev' -t attr -n name -v kvm \
    -s /qemuCaps -t elem -n kernelVersion -v "$kv" \
    -s /qemuCaps -t elem -n hostCPUSignature -v "$sig" \
    -s /qemuCaps -t elem -n microcodeVersion -v "$microcode" \
    "$f"
  # duplicate every top-level element typed tcg as kvm (children included)
  local tmp; tmp=$(mktemp)
  xmlstarlet tr <(cat <<'XSL'
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>
  <xsl:template match="/qemuCaps/*[@type='tcg']">
    <xsl:copy-of select="."/>
    <xsl:text>&#10;  </xsl:text>
    <xsl:copy><xsl:apply-templates select="@*"/><xsl:attribute name="type">kvm</xsl:attribute><xsl:apply-templates select="node()"/></xsl:copy>
  </xsl:template>
</xsl:stylesheet>
XSL
  ) "$f" >"$tmp" && cat "$tmp" >"$f"
  rm -f "$tmp"
}

patched=0
if ! caps_ok; then
  for try in $(seq "$TRIES"); do
    f=$(caps_file)
    [ -n "$f" ] || die "no QEMU capability cache for $EMULATOR in $ROOT$CAPS_DIR (did 'virsh domcapabilities' fail?)"
    stop_daemon libvirtd; stop_daemon virtlogd
    patch_caps "$f"
    start_daemons
    patched=$try
    if caps_ok; then log "SEV and SEV-SNP patched into $f (try $try)"; break; fi
    log "libvirtd re-probed QEMU and dropped the patch (try $try of $TRIES)"
  done
  caps_ok || die "the $SUITE libvirt never reported <sev supported='yes'> with sev-snp under launchSecurity after $TRIES patch+restart tries"
fi

# --- 6. summary ----------------------------------------------------------------
ver=$(virsh_stack version --daemon 2>/dev/null | awk '/Running against daemon/ {l=$NF} /Running hypervisor/ {h=$NF} END {print "libvirt " l ", QEMU " h}')
printf 'sev-xform %s test stack ready: %s; chroot %s (%s); kvm=%s; sev+sev-snp %s; socket %s; %ss\n' \
  "$SUITE" "$ver" "$ROOT" "$built" "$([ "$FAKE_KVM" = 1 ] && echo emulated || echo real)" \
  "$([ "$patched" = 0 ] && echo already-patched || echo "patched, try $patched")" "$SOCK" "$(secs "$t0")"
