// HostFacts for the filter: domcapabilities from a file or from virsh, firmware
// descriptors from disk, each read at most once and only when a rule asks.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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

export const VIRSH_VERSION = ['version', '--daemon'] as const;

/** The daemon's version from `virsh version --daemon` ("Running against daemon: 11.3.0"), else the library's. */
export function libvirtVersionFromVirsh(run: RunCommand): string | undefined {
  const r = run('virsh', VIRSH_VERSION);
  if (r.error || r.status !== 0) return undefined;
  return (/Running against daemon: (\d+\.\d+\.\d+)/.exec(r.stdout) ?? /Using library: libvirt (\d+\.\d+\.\d+)/.exec(r.stdout))?.[1];
}

/** kvm_amd's sev_snp parameter under `root`: true when on (`Y` or `1`), false when off or absent (no SNP in this kernel, or kvm_amd not loaded). */
export function kvmSnpEnabled(root: string): boolean {
  try {
    return /^(1|Y|y)$/.test(readFileSync(join(root, 'sys/module/kvm_amd/parameters/sev_snp'), 'utf8').trim());
  } catch {
    return false;
  }
}

export interface HostFactsOptions {
  domcaps?: string;
  firmwareDirs: readonly string[];
  run: RunCommand;
  /** Where /sys is read for the kvm_amd parameters (`--host-root`); default '/' unless a --domcaps file describes the host. */
  hostRoot?: string;
}

export function hostFacts(opts: HostFactsOptions): HostFacts {
  let caps: DomainCaps | undefined;
  let version: { value: string | undefined } | undefined;
  let snp: boolean | undefined;
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
    libvirtVersion() {
      // A --domcaps file may describe another host: then this host's libvirt says nothing about it.
      if (opts.domcaps) return undefined;
      version ??= { value: libvirtVersionFromVirsh(opts.run) };
      return version.value;
    },
    snpActive() {
      // As for the version: with a --domcaps file, this host's /sys is only read when --host-root says where.
      if (opts.domcaps && opts.hostRoot === undefined) return undefined;
      snp ??= kvmSnpEnabled(opts.hostRoot ?? '/');
      return snp;
    },
  };
}
