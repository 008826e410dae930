// The host facts cache that `sev-xform host --write-cache` writes and the hook
// reads: the hook may not call libvirt (a deadlock is likely), so everything it
// needs about the host is stored here beforehand.

import { fail } from '../failure.js';
import type { HostFacts } from '../rules/types.js';
import { parseDomainCaps, type DomainCaps } from './domcaps.js';
import type { FirmwareDescriptor } from './firmware.js';
import { readTrustedFile } from './trusted-file.js';

export const DEFAULT_STATE_DIR = '/var/lib/sev-xform';

/** The state folder: an explicit option, else $SEV_XFORM_STATE_DIR, else /var/lib/sev-xform. */
export function stateDirOf(env: Readonly<Record<string, string | undefined>>, explicit?: unknown): string {
  if (typeof explicit === 'string' && explicit !== '') return explicit;
  return env['SEV_XFORM_STATE_DIR'] || DEFAULT_STATE_DIR;
}
export const CACHE_FILE = 'host.json';
export const CACHE_VERSION = 1;

export interface HostCache {
  version: typeof CACHE_VERSION;
  /** ISO time of writing. */
  written: string;
  /** `virsh domcapabilities --arch x86_64 --machine q35` output, verbatim. */
  domcaps: string;
  /** Firmware descriptors in effect when written, and where they were looked for. */
  firmware: FirmwareDescriptor[];
  firmwareDirs: string[];
  /** /proc/meminfo MemTotal in KiB. */
  memTotalKiB: number;
}

export function parseHostCache(text: string, path: string): HostCache {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    fail({ kind: 'host', message: `host cache ${path} is corrupt (not JSON); rewrite it with \`sev-xform host --write-cache\`` });
  }
  const c = data as Partial<HostCache> | null;
  if (
    !c ||
    typeof c !== 'object' ||
    c.version !== CACHE_VERSION ||
    typeof c.domcaps !== 'string' ||
    !Array.isArray(c.firmware) ||
    !Array.isArray(c.firmwareDirs) ||
    typeof c.memTotalKiB !== 'number'
  )
    fail({ kind: 'host', message: `host cache ${path} is corrupt or from another version; rewrite it with \`sev-xform host --write-cache\`` });
  return c as HostCache;
}

/** Largest host cache read: domcapabilities and the firmware descriptors take tens of KiB. */
export const MAX_CACHE_BYTES = 4 * 1024 * 1024;

/** Reads the cache, bounded and only when root alone can have written it (see trusted-file.ts). */
export function readHostCache(path: string): HostCache {
  const text = readTrustedFile(path, MAX_CACHE_BYTES, 'host cache');
  if (text === undefined) fail({ kind: 'host', message: `host cache ${path} cannot be read (ENOENT); write it with \`sev-xform host --write-cache\`` });
  return parseHostCache(text, path);
}

export function serializeHostCache(c: HostCache): string {
  return JSON.stringify(c, null, 2) + '\n';
}

/** HostFacts answered from the cache alone; the domcaps are parsed on first use. */
export function hostFactsFromCache(cache: HostCache, path: string): HostFacts {
  let caps: DomainCaps | undefined;
  return {
    firmwareDirs: cache.firmwareDirs,
    caps() {
      caps ??= parseDomainCaps(cache.domcaps, `host cache ${path}`);
      return caps;
    },
    firmware: () => cache.firmware,
  };
}
