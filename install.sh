#!/bin/sh
# Installs sev-xform: the binary, the libvirt qemu hook shim and the host cache.
# Every file and folder it creates is listed in a manifest, so --uninstall
# removes exactly those; running it again changes nothing.
set -eu
# Paths and manifest entries are data: never expand them as globs.
set -f

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
  DESTDIR   staging root, e.g. for packages or tests (created if missing; it and
            the folders above it must be writable by root and you only); skips
            the libvirt version check, the host cache and any restart

Options:
  --restart-libvirtd  restart libvirtd (or virtqemud) so that it sees the new hook
  --check-libvirt     check libvirt >= 6.5 even with DESTDIR set
  --uninstall         remove what an earlier run installed (its manifest says what)

When the Debian package sev-xform is installed, use apt or dpkg instead: this
script refuses to install a second copy beside it.
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
/) PREFIX= ;;
/*) PREFIX=${PREFIX%/} ;;
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
me=$(id -u)

say() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }
die() {
	echo "install.sh: $*" >&2
	exit 1
}

# Every temporary file lives in this private folder (0700, random name) and goes with it on exit:
# a name merely beside a mktemp name in /tmp is predictable, and a local user who planted a FIFO or
# symlink there could hand root its own hook or manifest.
work=$(mktemp -d)
# A file being staged beside its destination (see place_file), removed if the run stops half-way.
staged=

# Lines "dir PATH" and "file PATH" (PATH without DESTDIR) for what this run created or wrote.
recorded=$work/recorded
: >"$recorded"
record() { echo "$1 $2" >>"$recorded"; }

# check_folder DIR: sets $safe to DIR's real path after checking that only root and the user running
# install.sh can change anything on the way to it from /. Otherwise another user could swap a folder
# for a symlink between this check and the write, and root would put the hook, or delete files,
# wherever the link points. Under DESTDIR the real path must stay inside DESTDIR.
check_folder() {
	cf_folder=$1
	safe=$(realpath -e -- "$cf_folder" 2>/dev/null) || die "cannot resolve the folder $cf_folder"
	cf_p=
	cf_rest=${safe#/}
	while :; do
		cf_shown=${cf_p:-/}
		[ ! -L "$cf_shown" ] || die "$cf_shown became a symbolic link while install.sh ran; nothing more was written"
		[ -d "$cf_shown" ] || die "$cf_shown is not a folder"
		cf_info=$(stat -c '%u %a' -- "$cf_shown")
		cf_owner=${cf_info% *}
		cf_mode=${cf_info#* }
		if [ "$cf_owner" != 0 ] && [ "$cf_owner" != "$me" ]; then
			die "$cf_shown (on the way to $cf_folder) is owned by uid $cf_owner, who could redirect what install.sh writes there; use a folder owned by root or by you (DESTDIR needs no root: stage as the user who owns it)"
		fi
		# Sticky folders (/tmp) are fine: there nobody can rename or delete another user's entries.
		if [ $((0$cf_mode & 022)) -ne 0 ] && [ $((0$cf_mode & 01000)) -eq 0 ]; then
			die "$cf_shown (on the way to $cf_folder) is writable by group or others (mode $cf_mode), who could redirect what install.sh writes there; remove their write permission (chmod go-w $cf_shown) or use another folder"
		fi
		[ -n "$cf_rest" ] || break
		cf_part=${cf_rest%%/*}
		cf_p=$cf_p/$cf_part
		if [ "$cf_rest" = "$cf_part" ]; then cf_rest=; else cf_rest=${cf_rest#*/}; fi
	done
	if [ -n "$DESTDIR" ]; then
		case $safe in
		"$DESTDIR" | "$DESTDIR"/*) ;;
		*) die "$cf_folder resolves to $safe, outside DESTDIR $DESTDIR: a symbolic link in the staging root points out of it" ;;
		esac
	fi
}

# place_file SRC DEST MODE: copies SRC to DESTDIR$DEST unless it is already there unchanged, and sets
# $changed. The copy is staged under a name mktemp picks in DEST's own folder (the rename must stay on
# one filesystem; the folder was checked to be writable by root and you only), and the rename makes
# the switch atomic: a hook running meanwhile sees the old file or the new one, never half of one.
# mv -T replaces whatever is at DEST (a symlink included) and never writes through it.
place_file() {
	src=$1 dest=$2 mode=$3
	check_folder "$(dirname "$DESTDIR$dest")"
	target=$safe/${dest##*/}
	if [ -f "$target" ] && [ ! -L "$target" ] && cmp -s "$src" "$target"; then
		[ "$(stat -c %a "$target")" = "${mode#0}" ] || chmod "$mode" "$target"
		changed=no
		return 0
	fi
	staged=$(mktemp "$safe/.sev-xform.XXXXXXXX")
	if cp "$src" "$staged" && chmod "$mode" "$staged" && mv -fT "$staged" "$target"; then
		staged=
		changed=yes
		return 0
	fi
	rm -f "$staged"
	staged=
	die "could not write $DESTDIR$dest"
}

install_file() {
	record file "$2"
	place_file "$@"
}

# Manifest lines name only what install.sh can have created: the binary (PREFIX/bin/sev-xform, for
# any PREFIX an earlier run used), the hook, the host cache, and folders on the way to those. Anything
# else means the manifest was tampered with, and --uninstall, which runs as root, refuses it whole.
check_manifest() {
	manifest=$1
	[ -f "$manifest" ] && [ ! -L "$manifest" ] || die "$manifest is not a regular file; nothing was changed"
	files=$(sed -n 's/^file //p' "$manifest")
	while IFS= read -r line; do
		kind=${line%% *}
		path=${line#* }
		ok=no
		case $path in
		/*[!A-Za-z0-9._/+-]* | *//* | */./* | */../* | */. | */.. | */) ;;
		/?*)
			case $kind in
			file)
				case $path in
				"$HOOK" | "$CACHE" | /bin/sev-xform | /?*/bin/sev-xform) ok=yes ;;
				esac
				;;
			dir)
				for f in $files $HOOK $CACHE; do
					case $f in "$path"/*) ok=yes ;; esac
				done
				;;
			esac
			;;
		esac
		[ "$line" != "$kind $path" ] && ok=no
		[ "$ok" = yes ] || die "$manifest: the entry '$line' is not a path install.sh installs (was the manifest edited?); nothing was removed or changed"
	done <"$manifest"
}

# The Debian package provides the same files and the same hook: a second copy beside it would leave
# one of them behind when the other is removed.
package_installed() {
	command -v dpkg-query >/dev/null 2>&1 || return 1
	pkg_status=$(dpkg-query -W -f='${db:Status-Status}' sev-xform 2>/dev/null) || return 1
	case $pkg_status in
	'' | not-installed | config-files) return 1 ;;
	esac
}

# A file the Debian package owns (the hook, when both were once installed): --uninstall leaves it.
owned_by_package() {
	[ -z "$DESTDIR" ] && command -v dpkg-query >/dev/null 2>&1 && dpkg-query -S "$1" >/dev/null 2>&1
}

# The manifest is the union of this run's and earlier runs' entries, rewritten only when it changes.
save_manifest() {
	[ -d "$DESTDIR$STATE" ] || return 0
	{
		if [ -f "$DESTDIR$MANIFEST" ]; then cat "$DESTDIR$MANIFEST"; fi
		cat "$recorded"
	} | LC_ALL=C sort -u >"$work/manifest"
	place_file "$work/manifest" "$MANIFEST" 0644
}

# On a failure half-way, what was already created still goes into the manifest, so --uninstall can remove it.
on_exit() {
	status=$?
	if [ "$status" -ne 0 ] && [ "$action" = install ] && [ -s "$recorded" ]; then (save_manifest) || true; fi
	[ -z "$staged" ] || rm -f "$staged"
	rm -rf "$work"
	exit "$status"
}
trap on_exit EXIT
# dash runs the EXIT trap on exit only: turn the usual signals into one.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# mkdir -p that records each folder it creates, so that uninstall removes only those.
ensure_dir() {
	path=
	rest=${1#/}
	while [ -n "$rest" ]; do
		part=${rest%%/*}
		parent=$DESTDIR$path
		path=$path/$part
		if [ "$rest" = "$part" ]; then rest=; else rest=${rest#*/}; fi
		if [ ! -d "$DESTDIR$path" ]; then
			check_folder "${parent:-/}"
			mkdir -m 0755 "$safe/$part"
			record dir "$path"
		fi
	done
	check_folder "$DESTDIR$1"
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

if [ -n "$DESTDIR" ]; then
	given=$DESTDIR
	DESTDIR=
	if [ ! -e "$given" ]; then
		[ "$action" = install ] || die "no manifest at $given$MANIFEST: DESTDIR $given does not exist"
		# Packagers point DESTDIR at a folder that may not exist yet: created, once the folder it goes into passes.
		existing=$(dirname "$given")
		while [ ! -e "$existing" ]; do existing=$(dirname "$existing"); done
		check_folder "$existing"
		mkdir -p -m 0755 "$given"
	fi
	check_folder "$given"
	[ "$safe" != / ] || die "DESTDIR $given is the root folder: leave DESTDIR unset to install into this system"
	case $safe in
	*[!A-Za-z0-9._/+-]*) die "DESTDIR $given resolves to $safe; its path may only contain letters, digits and . _ / + -" ;;
	esac
	# From here on DESTDIR is its real path, to which check_folder holds every folder written.
	DESTDIR=$safe
fi

if [ "$action" = uninstall ]; then
	manifest=$DESTDIR$MANIFEST
	[ -e "$manifest" ] || die "no manifest at $manifest: nothing was installed by install.sh here"
	check_folder "$DESTDIR$STATE"
	check_manifest "$manifest"
	dirs=$(sed -n 's/^dir //p' "$manifest" | LC_ALL=C sort -r)
	for path in $(sed -n 's/^file //p' "$manifest"); do
		folder=$(dirname "$DESTDIR$path")
		[ -d "$folder" ] || continue
		check_folder "$folder"
		target=$safe/${path##*/}
		[ -e "$target" ] || [ -L "$target" ] || continue
		if owned_by_package "$path"; then
			say "kept $path: it belongs to the Debian package sev-xform"
			continue
		fi
		rm -f "$target"
		say "removed $path"
	done
	rm -f "$manifest"
	for path in $dirs; do
		[ -d "$DESTDIR$path" ] && [ ! -L "$DESTDIR$path" ] || continue
		if owned_by_package "$path"; then continue; fi
		check_folder "$(dirname "$DESTDIR$path")"
		if rmdir "$safe/${path##*/}" 2>/dev/null; then
			say "removed $path/"
		else
			say "kept $path/: it holds files install.sh did not put there (e.g. backups from sev-xform apply)"
		fi
	done
	say "uninstalled; libvirt stops running the hook at once (it looks into $HOOKS/qemu.d/ at every call)"
	exit 0
fi

if [ -z "$DESTDIR" ] && package_installed; then
	die "the Debian package sev-xform is installed here (dpkg status: $pkg_status) and provides the binary and the hook already; upgrade or remove it with apt or dpkg instead of install.sh"
fi
if [ -e "$DESTDIR$MANIFEST" ]; then check_manifest "$DESTDIR$MANIFEST"; fi
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

sed "s|^SEV_XFORM=.*|SEV_XFORM=$BIN|" "$here/hooks/qemu" >"$work/hook"
install_file "$work/hook" "$HOOK" 0755
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
	"$BIN" host --write-cache --state-dir "$STATE" || host_status=$?
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
