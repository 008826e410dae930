// QEMU firmware descriptors (docs/interop/firmware.json): libvirt's
// `<os firmware='efi'>` picks one whose features match the guest, so SEV needs
// one listing `amd-sev`, and SEV-ES one listing `amd-sev-es` as well.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface FirmwareDescriptor {
  file: string;
  features: string[];
  interfaces: string[];
  targets: Array<{ architecture: string; machines: string[] }>;
  executable?: string;
}

/** The folders QEMU and libvirt search, lowest priority first. */
export function defaultFirmwareDirs(home: string | undefined): string[] {
  const dirs = ['/usr/share/qemu/firmware', '/etc/qemu/firmware'];
  if (home) dirs.push(join(home, '.config/qemu/firmware'));
  return dirs;
}

/**
 * Descriptors in effect: a file name in a later folder overrides the same name
 * in an earlier one, and an empty file masks it (QEMU's rules). Unreadable
 * folders count as empty; a descriptor that cannot be read or is not JSON is
 * skipped, and its path added to `broken` when given.
 */
export function loadFirmwareDescriptors(dirs: readonly string[], broken?: string[]): FirmwareDescriptor[] {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) if (name.endsWith('.json')) byName.set(name, join(dir, name));
  }
  const out: FirmwareDescriptor[] = [];
  for (const name of [...byName.keys()].sort()) {
    const file = byName.get(name)!;
    try {
      if (statSync(file).size === 0) continue;
      const d = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      const mapping = (d['mapping'] ?? {}) as Record<string, unknown>;
      const exe = (mapping['executable'] ?? {}) as Record<string, unknown>;
      out.push({
        file,
        features: Array.isArray(d['features']) ? d['features'].map(String) : [],
        interfaces: Array.isArray(d['interface-types']) ? d['interface-types'].map(String) : [],
        targets: Array.isArray(d['targets'])
          ? (d['targets'] as Array<Record<string, unknown>>).map((t) => ({
              architecture: String(t['architecture'] ?? ''),
              machines: Array.isArray(t['machines']) ? t['machines'].map(String) : [],
            }))
          : [],
        executable: typeof exe['filename'] === 'string' ? exe['filename'] : typeof mapping['filename'] === 'string' ? (mapping['filename'] as string) : undefined,
      });
    } catch {
      broken?.push(file);
      continue;
    }
  }
  return out;
}

/** Compiled machine-type patterns: every domain of a batch checks the same few descriptors. */
const GLOBS = new Map<string, RegExp>();

function globMatch(pattern: string, value: string): boolean {
  let re = GLOBS.get(pattern);
  if (!re) {
    re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
    GLOBS.set(pattern, re);
  }
  return re.test(value);
}

/** Descriptors usable for a UEFI x86_64 q35 guest that list every feature in `needed`. */
export function sevFirmware(descriptors: readonly FirmwareDescriptor[], needed: readonly string[]): FirmwareDescriptor[] {
  return descriptors.filter(
    (d) =>
      d.interfaces.includes('uefi') &&
      needed.every((f) => d.features.includes(f)) &&
      d.targets.some((t) => t.architecture === 'x86_64' && t.machines.some((m) => globMatch(m, 'pc-q35-9.9'))),
  );
}
