// HostFacts for the filter: domcapabilities from a file or from virsh, firmware
// descriptors from disk, each read at most once and only when a rule asks.

import { readFileSync } from 'node:fs';
import { fail } from '../failure.js';
import { parseDomainCaps, type DomainCaps } from './domcaps.js';
import { loadFirmwareDescriptors, type FirmwareDescriptor } from './firmware.js';
import type { HostFacts } from '../rules/types.js';

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
  error?: string;
}

export type RunCommand = (cmd: string, args: readonly string[]) => CommandResult;

export function readTextFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what, message: `cannot read ${path} (${code ?? String(e)})` });
  }
}

export const VIRSH_DOMCAPS = ['domcapabilities', '--arch', 'x86_64', '--machine', 'q35'] as const;

export function domcapsFromVirsh(run: RunCommand): DomainCaps {
  const r = run('virsh', VIRSH_DOMCAPS);
  const cmd = `virsh ${VIRSH_DOMCAPS.join(' ')}`;
  if (r.error || r.status !== 0) {
    const why = (r.error ?? r.stderr.trim().split('\n')[0]) || `exit status ${r.status}`;
    fail({ kind: 'host', message: `\`${cmd}\` failed (${why}); pass --domcaps FILE` });
  }
  return parseDomainCaps(r.stdout, cmd);
}

export function hostFacts(opts: { domcaps?: string; firmwareDirs: readonly string[]; run: RunCommand }): HostFacts {
  let caps: DomainCaps | undefined;
  let firmware: FirmwareDescriptor[] | undefined;
  const broken: string[] = [];
  return {
    firmwareDirs: opts.firmwareDirs,
    caps() {
      caps ??= opts.domcaps
        ? parseDomainCaps(readTextFile(opts.domcaps, '--domcaps'), opts.domcaps)
        : domcapsFromVirsh(opts.run);
      return caps;
    },
    firmware() {
      firmware ??= loadFirmwareDescriptors(opts.firmwareDirs, broken);
      return firmware;
    },
    brokenFirmware() {
      this.firmware();
      return broken;
    },
  };
}
