// The hook's configuration, /etc/sev-xform/hook.conf: `key = value` lines,
// `#` comments. Only SEV domains read it, so a broken file never blocks others.
//
//   # MiB of host memory that SEV guests' pinned memory may never use
//   reserve_mib = 2048
//   # MiB QEMU's own process may use above a guest's pinned memory
//   qemu_overhead_mib = 256

import { readFileSync } from 'node:fs';
import { fail } from '../failure.js';
import { DEFAULT_QEMU_OVERHEAD_MIB } from '../domain/memory.js';

export const DEFAULT_HOOK_CONFIG = '/etc/sev-xform/hook.conf';

/** Memory kept back for the host: pinned guest memory cannot be reclaimed, so without a margin the host's OOM killer runs. */
export const DEFAULT_RESERVE_MIB = 2048;

export interface HookConfig {
  reserveMiB: number;
  /** QEMU's process overhead per guest in the memory accounting; what `--qemu-overhead` gave the filter. */
  qemuOverheadMiB: number;
}

const DEFAULT_CONFIG: HookConfig = { reserveMiB: DEFAULT_RESERVE_MIB, qemuOverheadMiB: DEFAULT_QEMU_OVERHEAD_MIB };

const KEYS: Readonly<Record<string, keyof HookConfig>> = { reserve_mib: 'reserveMiB', qemu_overhead_mib: 'qemuOverheadMiB' };

export function parseHookConfig(text: string, path: string): HookConfig {
  const config: HookConfig = { ...DEFAULT_CONFIG };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/#.*/, '').trim();
    if (line === '') continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    const where = `${path} line ${i + 1}`;
    if (!m) fail({ kind: 'io', what: where, message: `'${line}' is not 'key = value'` });
    const key = m[1] ?? '';
    const value = m[2] ?? '';
    // An unknown key is an error, not ignored: a misspelt reserve would silently leave the default.
    const field = Object.hasOwn(KEYS, key) ? KEYS[key] : undefined;
    if (field === undefined) fail({ kind: 'io', what: where, message: `unknown key '${key}' (known: ${Object.keys(KEYS).join(', ')})` });
    if (!/^[0-9]{1,9}$/.test(value)) fail({ kind: 'io', what: where, message: `${key} '${value}' is not a whole number of MiB` });
    config[field] = Number(value);
  }
  return config;
}

/** A missing file means the defaults; an unreadable or malformed one is a failure naming it. */
export function readHookConfig(path: string): HookConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { ...DEFAULT_CONFIG };
    fail({ kind: 'io', what: path, message: `cannot read the hook configuration (${code ?? String(e)})` });
  }
  return parseHookConfig(text, path);
}
