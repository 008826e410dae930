#!/usr/bin/env bash
# Prepares this machine as an emulated AMD SEV host for sev-xform's integration
# tests: a real libvirtd (no systemd) whose QEMU capability cache claims SEV.
# Idempotent: a second run is a quick check. Undo with teardown.sh.
# Progress goes to stderr; stdout gets one summary line.
set -euo pipefail

URI=qemu:///system
EMULATOR=/usr/bin/qemu-system-x86_64
CAPS_DIR=/var/cache/libvirt/qemu/capabilities
STATE_DIR=${SEVX_STATE_DIR:-/run/sev-xform-test}
STATE=$STATE_DIR/started
TRIES=${SEVX_SEV_PATCH_TRIES:-6}
# CPU libvirtd is pinned to when this script starts it ("none": do not pin)
LIBVIRTD_CPU=${SEVX_LIBVIRTD_CPU:-$(awk '/^Cpus_allowed_list/ {split($2, a, /[-,]/); print a[1]}' /proc/self/status)}
MAX_FROM_ENV=${SEV_MAX_GUESTS+x}${SEV_MAX_ES_GUESTS+x}
SEV_CBITPOS=${SEV_CBITPOS:-47}
SEV_REDUCED_PHYS_BITS=${SEV_REDUCED_PHYS_BITS:-1}
SEV_MAX_GUESTS=${SEV_MAX_GUESTS:-15}
SEV_MAX_ES_GUESTS=${SEV_MAX_ES_GUESTS:-0}
# mtools, dosfstools, fdisk, binutils: boot.test.ts builds its guest disk and
# unified kernel image with them (test/integration/guest/build-image.sh).
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
          ovmf libxml2-utils virtinst xmlstarlet swtpm swtpm-tools qemu-utils
          mtools dosfstools fdisk binutils)

t0=$EPOCHREALTIME
log() { echo "setup.sh: $*" >&2; }
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "must run as root"
for v in SEV_CBITPOS SEV_REDUCED_PHYS_BITS SEV_MAX_GUESTS SEV_MAX_ES_GUESTS TRIES; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done

mkdir -p "$STATE_DIR"
touch "$STATE"
record() { grep -qxF "$1" "$STATE" || echo "$1" >>"$STATE"; }

# --- 1. packages ----------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
for b in libvirtd virtlogd virsh xmlstarlet "$EMULATOR"; do
  command -v "$b" >/dev/null || die "$b not found after installing packages"
done

# --- daemons (helpers) ----------------------------------------------------
# pid of the running system daemon NAME: from /run/NAME.pid, else a root process
# of that exact name. Session daemons of other users (autostarted by their
# virsh as `libvirtd --timeout=120`) are not ours and are never counted, nor
# are daemons that see another filesystem (a chroot's libvirtd, or one in
# another mount namespace): stopping those would break someone else's host.
my_mnt_ns=$(readlink /proc/self/ns/mnt)
same_host_view() {
  [ "$(readlink "/proc/$1/root" 2>/dev/null)" = / ] && [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$my_mnt_ns" ]
}
daemon_pid() {
  local name=$1 pid="" f
  if [ -r "/run/$name.pid" ]; then
    pid=$(tr -dc 0-9 <"/run/$name.pid")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && same_host_view "$pid"; then
      echo "$pid"; return 0
    fi
  fi
  for f in /proc/[0-9]*/comm; do
    [ "$(cat "$f" 2>/dev/null)" = "$name" ] || continue
    pid=${f#/proc/}; pid=${pid%/comm}
    [ "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" = 0 ] || continue
    same_host_view "$pid" || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--timeout' && continue
    echo "$pid"; return 0
  done
  return 0
}

close_inherited_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}

start_daemon() {
  local name=$1
  [ -n "$(daemon_pid "$name")" ] && return 0
  local pin=()
  # libvirt 9.0 re-probes QEMU (dropping the SEV patch) when the host CPUID it
  # reads differs from the cached one; CPUID leaves 0x1/0xb carry the APIC id of
  # the CPU the daemon happens to run on, so keep libvirtd on one CPU.
  if [ "$name" = libvirtd ] && [ "$LIBVIRTD_CPU" != none ]; then pin=(taskset -c "$LIBVIRTD_CPU"); fi
  # Without the caller's other open files: a daemon that inherits the fd of
  # `flock /tmp/sevx-libvirt.lock` holds the shared lock for as long as it runs.
  # SEVX_DAEMON_ARGS: extra arguments (private-host.sh passes --timeout 0, see there).
  # shellcheck disable=SC2086
  (close_inherited_fds; LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/$name.log" exec "${pin[@]}" "$name" -d ${SEVX_DAEMON_ARGS:-})
  for _ in $(seq 50); do [ -n "$(daemon_pid "$name")" ] && return 0; sleep 0.1; done
  die "$name -d did not leave a running $name (see /var/log/libvirt/$name.log)"
}

stop_libvirtd() {
  local pid; pid=$(daemon_pid libvirtd)
  [ -n "$pid" ] || return 0
  stop_process libvirtd "$pid"
}

wait_virsh() {
  for _ in $(seq 150); do
    virsh -c "$URI" version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "libvirtd does not answer 'virsh -c $URI version' after 30s (see /var/log/libvirt/libvirtd.log)"
}

# --- 2. users, groups, directories, qemu.conf -----------------------------
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
id -u libvirt-qemu >/dev/null 2>&1 ||
  useradd --system -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /etc/libvirt /var/log/libvirt /var/lib/libvirt/qemu/nvram /run/libvirt "$CAPS_DIR"

need_restart=0
conf=/etc/libvirt/qemu.conf
[ -e "$conf" ] || : >"$conf"
if ! grep -qx 'user = "root"' "$conf" || ! grep -qx 'group = "root"' "$conf" ||
   [ "$(grep -cE '^[[:space:]]*(user|group)[[:space:]]*=' "$conf")" != 2 ]; then
  sed -i -E '/^[[:space:]]*(user|group)[[:space:]]*=/d' "$conf"
  printf 'user = "root"\ngroup = "root"\n' >>"$conf"
  need_restart=1
  log "set user/group root in $conf"
fi

# --- 3. hugetlbfs (libvirtd reads the mounts when it starts) -------------
hugetlbfs=/dev/hugepages
if ! grep -qE "^[^ ]+ $hugetlbfs hugetlbfs " /proc/mounts; then
  mkdir -p "$hugetlbfs"
  if mount -t hugetlbfs hugetlbfs "$hugetlbfs"; then
    record hugetlbfs
    need_restart=1
    log "mounted hugetlbfs on $hugetlbfs"
  else
    log "WARNING: could not mount hugetlbfs on $hugetlbfs; hugepages domains will not render"
    hugetlbfs=unavailable
  fi
fi

# --- 3b. KVM: the real device, or emulated as SEV is -------------------------
# Without /dev/kvm libvirt offers only TCG and refuses every type='kvm' domain,
# the type an SEV guest must have. A plain file there makes libvirt look for
# KVM; the capability cache is then patched to claim it (step 5). Such domains
# define and render; anything that starts a guest here starts a TCG copy.
KVM_DEV=/dev/kvm
# A libvirtd this script did not start is restarted, never adopted as ours.
foreign_libvirtd=0
if [ -n "$(daemon_pid libvirtd)" ] && ! grep -qx libvirtd "$STATE"; then foreign_libvirtd=1; fi
if [ -c "$KVM_DEV" ]; then
  kvm=real
elif [ -e "$KVM_DEV" ] && [ ! -f "$KVM_DEV" ]; then
  die "$KVM_DEV exists but is neither a character device nor a regular file"
else
  kvm=emulated
  if [ ! -e "$KVM_DEV" ]; then
    # libvirt checks /dev/kvm when it starts and probes QEMU: create it with the daemon stopped.
    stop_libvirtd
    : >"$KVM_DEV"
    chmod 0666 "$KVM_DEV"
    record kvm-file
    log "no $KVM_DEV: created a plain file there to emulate KVM"
  fi
  # libvirt cannot bind-mount a regular file into a domain's private /dev.
  if ! grep -qxE '[[:space:]]*namespaces[[:space:]]*=[[:space:]]*\[[[:space:]]*\][[:space:]]*' "$conf"; then
    grep -E '^[[:space:]]*namespaces[[:space:]]*=' "$conf" >"$STATE_DIR/qemu.conf.namespaces" || true
    sed -i -E '/^[[:space:]]*namespaces[[:space:]]*=/d' "$conf"
    echo 'namespaces = []' >>"$conf"
    record qemu-namespaces
    need_restart=1
    log "set namespaces = [] in $conf (emulated KVM)"
  fi
fi

# --- 4. daemons -----------------------------------------------------------
# daemons started by an earlier run of this script stay recorded as ours
if [ -z "$(daemon_pid virtlogd)" ]; then start_daemon virtlogd; record virtlogd; log "started virtlogd"; fi
if [ -z "$(daemon_pid libvirtd)" ]; then
  start_daemon libvirtd
  if ((foreign_libvirtd)); then log "restarted libvirtd (not ours: left running by teardown)"
  else record libvirtd; log "started libvirtd"; fi
elif ((need_restart)); then
  log "restarting libvirtd to pick up qemu.conf / hugetlbfs"
  stop_libvirtd; start_daemon libvirtd
fi
wait_virsh

# --- 5. make libvirt believe in SEV (and KVM, when emulated) ---------------
# --virttype kvm: with emulated KVM this fails until the cache claims KVM.
domcaps() { virsh -c "$URI" domcapabilities --virttype kvm --machine q35 2>/dev/null || true; }

# domcapabilities says <sev supported='yes'> with the cbitpos/reducedPhysBits we
# asked for. maxGuests/maxESGuests are not checked: libvirt 9.0 does not take
# them from the cache but reads them from host CPUID 0x8000001F each time it
# loads the cache, so on a non-SEV CPU they always read 0 whatever we write.
sev_ok() {
  local caps; caps=$(domcaps)
  [ "$(xpath "string(//features/sev/@supported)" <<<"$caps")" = yes ] &&
  [ "$(xpath "string(//features/sev/cbitpos)" <<<"$caps")" = "$SEV_CBITPOS" ] &&
  [ "$(xpath "string(//features/sev/reducedPhysBits)" <<<"$caps")" = "$SEV_REDUCED_PHYS_BITS" ]
}
xpath() { xmllint --xpath "$1" - 2>/dev/null || true; }

caps_file() {
  { grep -lF "<emulator>$EMULATOR</emulator>" "$CAPS_DIR"/*.xml 2>/dev/null || true; } | head -n1
}

# The host facts libvirt compares with a KVM cache before trusting it, in its
# own formats: `uname -r` `uname -v`; the first CPU's microcode as a number;
# "vendor, model name, family: F, model: M, stepping: S".
cpuinfo() { awk -F': *' -v k="$1" '$1 ~ "^"k"[ \t]*$" {print $2; exit}' /proc/cpuinfo; }
patch_kvm() {
  local f=$1 microcode sig tmp
  microcode=$(cpuinfo microcode)
  [ -z "$microcode" ] || microcode=$((microcode))
  sig="$(cpuinfo vendor_id), $(cpuinfo 'model name'), family: $(cpuinfo 'cpu family'), model: $(cpuinfo model), stepping: $(cpuinfo stepping)"
  tmp=$(mktemp "$CAPS_DIR/.sevx-kvm.XXXXXX")
  xmlstarlet tr "$here/emulate-kvm.xsl" -s kernelVersion="$(uname -r) $(uname -v)" \
    -s microcodeVersion="$microcode" -s hostCPUSignature="$sig" "$f" >"$tmp" || { rm -f "$tmp"; die "xmlstarlet tr emulate-kvm.xsl $f failed"; }
  chmod --reference="$f" "$tmp"
  mv "$tmp" "$f"
}

patch_caps() {
  local f=$1 pdh certchain
  if [ "$kvm" = emulated ]; then patch_kvm "$f"; record kvm-caps; fi
  sev_caps_patch "$f" sev-guest
}

patched=0
if ! sev_ok; then
  for try in $(seq "$TRIES"); do
    f=$(caps_file)
    [ -n "$f" ] || die "no QEMU capability cache for $EMULATOR in $CAPS_DIR (did 'virsh domcapabilities' fail?)"
    stop_libvirtd
    patch_caps "$f"
    start_daemon libvirtd
    wait_virsh
    patched=$try
    if sev_ok; then log "SEV$([ "$kvm" = emulated ] && echo ' and KVM') capabilities patched into $f (try $try)"; break; fi
    log "libvirtd re-probed QEMU and dropped the patch (try $try of $TRIES)"
  done
  sev_ok || die "libvirt never reported domain type kvm with <sev supported='yes'> cbitpos=$SEV_CBITPOS after $TRIES patch+restart tries (kvm=$kvm)"
fi

caps=$(domcaps)
rep_max=$(xpath "string(//features/sev/maxGuests)" <<<"$caps")
rep_max_es=$(xpath "string(//features/sev/maxESGuests)" <<<"$caps")
if [ -n "$MAX_FROM_ENV" ] &&
   { [ "$rep_max" != "$SEV_MAX_GUESTS" ] || [ "$rep_max_es" != "$SEV_MAX_ES_GUESTS" ]; }; then
  log "note: cache says maxGuests=$SEV_MAX_GUESTS maxESGuests=$SEV_MAX_ES_GUESTS but libvirt reports $rep_max/$rep_max_es (it reads these from host CPUID, not the cache)"
fi

# --- 6. summary ------------------------------------------------------------
ver=$(virsh -c "$URI" version 2>/dev/null | awk '/Using library/ {l=$NF} /Running hypervisor/ {h=$NF} END {print "libvirt " l ", QEMU " h}')
mine=$(paste -sd, "$STATE"); [ -n "$mine" ] || mine=none
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')
printf 'sev-xform test host ready: %s; kvm=%s; domcapabilities sev supported=yes cbitpos=%s reducedPhysBits=%s maxGuests=%s maxESGuests=%s (%s); hugetlbfs=%s; started by setup: %s; %.1fs\n' \
  "$ver" "$kvm" "$SEV_CBITPOS" "$SEV_REDUCED_PHYS_BITS" "$rep_max" "$rep_max_es" \
  "$([ "$patched" = 0 ] && echo already-patched || echo "patched, try $patched")" \
  "$hugetlbfs" "$mine" "$secs"
