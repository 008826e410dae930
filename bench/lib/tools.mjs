// The baselines' tools come from Debian packages; as root the bench installs missing ones the way
// the integration set-up does, and otherwise skips that baseline with one line.
import { accessSync, constants } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const TOOLS = [
  { name: 'time', bin: '/usr/bin/time', pkg: 'time', purpose: 'peak RSS' },
  { name: 'xmlstarlet', bin: 'xmlstarlet', pkg: 'xmlstarlet', purpose: 'the xmlstarlet baseline' },
  { name: 'virt-xml', bin: 'virt-xml', pkg: 'virtinst', purpose: 'the virt-xml baseline' },
];

/** The tool's absolute path, or undefined when it is not installed. */
export function which(bin) {
  const dirs = bin.includes('/') ? [''] : (process.env.PATH ?? '/usr/bin:/bin').split(':');
  for (const dir of dirs) {
    const path = dir ? join(dir, bin) : bin;
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** Resolves every tool, installing the missing ones when allowed; returns name -> path (absent: skipped). */
export function ensureTools(log) {
  const found = new Map(TOOLS.map((t) => [t.name, which(t.bin)]));
  const missing = TOOLS.filter((t) => !found.get(t.name));
  if (missing.length > 0 && process.getuid?.() === 0 && which('apt-get')) {
    log(`bench: installing ${missing.map((t) => t.pkg).join(' ')} (apt-get)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing.map((t) => t.pkg)], { stdio: ['ignore', 'ignore', 'inherit'], env });
    for (const t of missing) found.set(t.name, which(t.bin));
  }
  for (const t of TOOLS) if (!found.get(t.name)) log(`bench: ${t.name} not found (Debian package ${t.pkg}): skipping ${t.purpose}`);
  return found;
}

/** First line of `cmd args` output, for the machine description; undefined when it cannot run. */
export function versionOf(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  return `${r.stdout}${r.stderr}`.split('\n').find((l) => l.trim() !== '')?.trim();
}
