#!/usr/bin/env bash
# Debian packages the CLI tests use beyond a new machine's own (the libvirt ones are
# installed by test/integration/host/setup.sh): Ansible runs the fleet playbook in
# docs/, bash-completion loads the package's completion, dpkg-dev builds the .deb,
# GNU time measures peak memory. Root only; installs just what is missing.
set -euo pipefail
packages=(ansible bash-completion dpkg-dev time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "test-deps: installing ${missing[*]}" >&2
apt-get update >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
