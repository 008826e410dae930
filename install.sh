#!/bin/sh
# Installs sev-xform: the binary, the libvirt qemu hook shim and the host cache.
# Every file and folder it creates is listed in a manifest, so --uninstall
# removes exactly those; running it again changes nothing.
set -eu

usage() {
	cat <<'EOF'
usage: ./install.sh [--restart-libvirtd] [--check-libvirt]
       ./install.sh --uninstall

Installs dist/sev-xform (build it first: npm run build) as $PREFIX/bin/sev-xform
and the hook /etc/libvirt/hooks/qemu.d/sev-xform, creates /var/lib/sev-xform and
writes the host cache there (`sev-xform host --write-cache`). An existing
/etc/libvirt/hooks/qemu is never touched.

Environment:
  PREFIX    install prefix (default /usr/local)
  DESTDIR   staging root, e.g. for packages or tests; skips the libvirt version
            check, the host cache and any restart

Options:
  --restart-libvirtd  restart libvirtd (or virtqemud) so that it sees the new hook
  --check-libvirt     check libvirt >= 6.5 even with DESTDIR set
  --uninstall         remove what an earlier run installed (its manifest says what)
EOF
}

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
action=install
restart=no
check_libvirt=auto
for arg in "$@"; do
	case $arg in
	--uninstall) action=uninstall ;;
	--restart-libvirtd) restart=yes ;;
	--check-libvirt) check_libvirt=yes ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "install.sh: unknown option '$arg' (see --help)" >&2
		exit 2
		;;
	esac
done

# The path is written into the hook and the manifest: keep it to characters that need no quoting.
case $PREFIX in
/*) ;;
*)
	echo "install.sh: PREFIX '$PREFIX' is not an absolute path" >&2
	exit 2
	;;
esac
case $PREFIX$DESTDIR in
*[!A-Za-z0-9._/+-]*)
	echo "install.sh: PREFIX and DESTDIR may only contain letters, digits and . _ / + -" >&2
	exit 2
	;;
esac
if [ -n "$DESTDIR" ] && [ "$restart" = yes ]; then
	echo "install.sh: --restart-libvirtd restarts this host's libvirtd, which does not use DESTDIR $DESTDIR; leave out one of them" >&2
	exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
BIN=$PREFIX/bin/sev-xform
HOOKS=/etc/libvirt/hooks
HOOK=$HOOKS/qemu.d/sev-xform
STATE=/var/lib/sev-xform
MANIFEST=$STATE/install-manifest
CACHE=$STATE/host.json

say() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }
die() {
	echo "install.sh: $*" >&2
	exit 1
}

# Lines "dir PATH" and "file PATH" (PATH without DESTDIR) for what this run created or wrote.
recorded=$(mktemp)
record() { echo "$1 $2" >>"$recorded"; }

# The manifest is the union of this run's and earlier runs' entries, rewritten only when it changes.
save_manifest() {
	[ -d "$DESTDIR$STATE" ] || return 0
	{
		if [ -f "$DESTDIR$MANIFEST" ]; then cat "$DESTDIR$MANIFEST"; fi
		cat "$recorded"
	} | LC_ALL=C sort -u >"$recorded.manifest"
	if [ -f "$DESTDIR$MANIFEST" ] && cmp -s "$recorded.manifest" "$DESTDIR$MANIFEST"; then return 0; fi
	cp "$recorded.manifest" "$DESTDIR$MANIFEST.new.$$"
	chmod 0644 "$DESTDIR$MANIFEST.new.$$"
	mv -f "$DESTDIR$MANIFEST.new.$$" "$DESTDIR$MANIFEST"
}

# On a failure half-way, what was already created still goes into the manifest, so --uninstall can remove it.
on_exit() {
	status=$?
	if [ "$status" -ne 0 ] && [ "$action" = install ] && [ -s "$recorded" ]; then save_manifest || true; fi
	rm -f "$recorded" "$recorded.hook" "$recorded.manifest"
	exit "$status"
}
trap on_exit EXIT

# mkdir -p that records each folder it creates, so that uninstall removes only those.
ensure_dir() {
	path=
	rest=${1#/}
	while [ -n "$rest" ]; do
		part=${rest%%/*}
		path=$path/$part
		if [ "$rest" = "$part" ]; then rest=; else rest=${rest#*/}; fi
		if [ ! -d "$DESTDIR$path" ]; then
			mkdir -m 0755 "$DESTDIR$path"
			record dir "$path"
		fi
	done
}

# Copies SRC to DEST (mode MODE) unless it is already there unchanged, and sets
# $changed; the rename makes the switch atomic, so a hook running meanwhile
# sees the old file or the new one, never half of one.
install_file() {
	src=$1 dest=$2 mode=$3
	target=$DESTDIR$dest
	record file "$dest"
	if [ -f "$target" ] && cmp -s "$src" "$target"; then
		[ "$(stat -c %a "$target")" = "${mode#0}" ] || chmod "$mode" "$target"
		changed=no
		return 0
	fi
	cp "$src" "$target.new.$$"
	chmod "$mode" "$target.new.$$"
	mv -f "$target.new.$$" "$target"
	changed=yes
}

libvirt_version() {
	for daemon in libvirtd virtqemud virsh; do
		if command -v "$daemon" >/dev/null 2>&1; then
			v=$("$daemon" --version 2>/dev/null | awk 'NR == 1 { print $NF }')
			case $v in
			[0-9]*.[0-9]*)
				echo "$v"
				return 0
				;;
			esac
		fi
	done
	return 1
}

# qemu.d/ exists since libvirt 6.5; older libvirt runs only /etc/libvirt/hooks/qemu, which we never edit.
check_libvirt_version() {
	if ! v=$(libvirt_version); then
		die "cannot find libvirtd, virtqemud or virsh to check the libvirt version (the hook needs libvirt >= 6.5); install libvirt first, or set DESTDIR to stage the files without the check"
	fi
	major=${v%%.*}
	rest=${v#*.}
	minor=${rest%%.*}
	if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 5 ]; }; then
		die "libvirt $v is older than 6.5 and does not run hooks from $HOOKS/qemu.d/; sev-xform will not edit $HOOKS/qemu. Upgrade libvirt, or call '$BIN hook \"\$@\"' yourself from $HOOKS/qemu for the operations prepare, migrate and restore, passing it the domain XML on stdin and exiting with its status"
	fi
}

restart_libvirt() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		done_any=no
		for unit in virtqemud libvirtd; do
			if systemctl is-active --quiet "$unit"; then
				systemctl restart "$unit"
				say "restarted $unit"
				done_any=yes
			fi
		done
		[ "$done_any" = yes ] || say "neither virtqemud nor libvirtd is running: the hook is picked up when one starts"
		return 0
	fi
	for daemon in virtqemud libvirtd; do
		pidfile=/run/$daemon.pid
		[ -s "$pidfile" ] || continue
		pid=$(cat "$pidfile")
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1))
			[ "$i" -le 300 ] || die "$daemon (pid $pid) did not stop within 30 s; restart it yourself"
			sleep 0.1
		done
		"$daemon" -d
		say "restarted $daemon"
		return 0
	done
	say "neither virtqemud nor libvirtd is running: the hook is picked up when one starts"
}

if [ "$action" = uninstall ]; then
	manifest=$DESTDIR$MANIFEST
	[ -f "$manifest" ] || die "no manifest at $manifest: nothing was installed by install.sh here"
	dirs=$(grep '^dir ' "$manifest" | sed 's/^dir //' | sort -r)
	grep '^file ' "$manifest" | sed 's/^file //' | while read -r path; do
		if [ -e "$DESTDIR$path" ]; then
			rm -f "$DESTDIR$path"
			say "removed $path"
		fi
	done
	rm -f "$manifest"
	for path in $dirs; do
		[ -d "$DESTDIR$path" ] || continue
		if rmdir "$DESTDIR$path" 2>/dev/null; then
			say "removed $path/"
		else
			say "kept $path/: it holds files install.sh did not put there (e.g. backups from sev-xform apply)"
		fi
	done
	say "uninstalled; libvirt stops running the hook at once (it looks into $HOOKS/qemu.d/ at every call)"
	exit 0
fi

[ -x "$here/dist/sev-xform" ] || die "$here/dist/sev-xform is missing: build it first with 'npm run build'"
if [ "$check_libvirt" = yes ] || { [ "$check_libvirt" = auto ] && [ -z "$DESTDIR" ]; }; then
	check_libvirt_version
fi

# The state folder first: the manifest lives there.
ensure_dir "$STATE"
ensure_dir "$PREFIX/bin"
ensure_dir "$HOOKS/qemu.d"

install_file "$here/dist/sev-xform" "$BIN" 0755
if [ "$changed" = yes ]; then say "installed $BIN"; else say "$BIN is up to date"; fi

sed "s|^SEV_XFORM=.*|SEV_XFORM=$BIN|" "$here/hooks/qemu" >"$recorded.hook"
install_file "$recorded.hook" "$HOOK" 0755
hook_changed=$changed
if [ "$changed" = yes ]; then say "installed the hook $HOOK"; else say "the hook $HOOK is up to date"; fi

if [ -e "$DESTDIR$HOOKS/qemu" ]; then
	say "left $HOOKS/qemu as it is; libvirt runs it before the scripts in $HOOKS/qemu.d/"
fi

if [ -n "$DESTDIR" ]; then
	say "DESTDIR is set: not writing the host cache; run '$BIN host --write-cache' on the host that runs the domains"
else
	# `host` exits 1 on a host that cannot run SEV guests yet, having written the cache all the same: look at the file.
	before=$(cksum "$CACHE" 2>/dev/null || echo none)
	host_status=0
	"$BIN" host --write-cache || host_status=$?
	if [ -f "$CACHE" ] && [ "$(cksum "$CACHE")" != "$before" ]; then
		record file "$CACHE"
		say "wrote the host cache $CACHE"
		[ "$host_status" -eq 0 ] || warn "this host cannot run SEV guests yet: see the report above"
	else
		# Not fatal: binary and hook are in place, and the hook refuses SEV domains (never others) until the cache exists.
		warn "'$BIN host --write-cache' did not write $CACHE; until it does, the hook refuses to start SEV domains (other domains are not affected). Run it once libvirtd runs."
	fi
fi

save_manifest

if [ "$restart" = yes ]; then
	restart_libvirt
elif [ "$hook_changed" = yes ]; then
	say "libvirtd (or virtqemud) only finds a new hook when it starts: restart it (systemctl restart libvirtd, or ./install.sh --restart-libvirtd)"
fi
