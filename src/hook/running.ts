// The SEV guests running now, read from libvirt's live status files
// (/run/libvirt/qemu/NAME.xml) because a hook may not ask libvirt itself.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FailureError, fail, renderFailure } from '../failure.js';
import { POLICY_ES } from '../domain/policy.js';
import { DEFAULT_QEMU_OVERHEAD_KIB, countedMemoryKiB } from '../domain/memory.js';
import { readXml } from '../xml/read.js';
import { XmlInputError } from '../xml/errors.js';
import type { XmlElement } from '../xml/xmlapi.js';

export const DEFAULT_RUN_DIR = '/run/libvirt/qemu';

export interface RunningSevGuest {
  name: string;
  file: string;
  /** True when the guest holds an SEV-ES slot rather than a plain SEV one. */
  es: boolean;
  /** Memory the guest pins, in KiB (see pinnedMemoryKiB). */
  pinnedKiB: number;
}

/**
 * Memory an SEV domain holds: pinned RAM, video and ROMs plus QEMU's process
 * (qemu_overhead_mib), or its hard_limit when larger; the filter and `plan` count the same.
 */
export function pinnedMemoryKiB(domain: XmlElement, overheadKiB: number = DEFAULT_QEMU_OVERHEAD_KIB): number {
  return countedMemoryKiB(domain, overheadKiB);
}

/** Policy bits of a launchSecurity element; a running guest's policy was accepted by libvirt, so only its form is checked. */
export function launchPolicy(ls: XmlElement, where: string): number {
  const text = ls.first('policy')?.text().trim() ?? '';
  if (!/^(0x)?[0-9a-fA-F]{1,8}$/.test(text)) fail({ kind: 'io', what: where, message: `<launchSecurity><policy> '${text}' is not hexadecimal` });
  return parseInt(text.replace(/^0x/i, ''), 16);
}

/** Every running SEV guest except `self` (matched by name or uuid), in file-name order. */
export function runningSevGuests(
  runDir: string,
  self: { name: string; uuid: string | undefined },
  overheadKiB: number = DEFAULT_QEMU_OVERHEAD_KIB,
): RunningSevGuest[] {
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    // libvirt creates the folder when it first starts a domain: none means none is running.
    if (code === 'ENOENT') return [];
    fail({ kind: 'io', what: runDir, message: `cannot list running domains (${code ?? String(e)})` });
  }
  const out: RunningSevGuest[] = [];
  for (const entry of names.filter((n) => n.endsWith('.xml')).sort()) {
    const file = join(runDir, entry);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e: unknown) {
      const code = (e as NodeJS.ErrnoException).code;
      // The domain stopped between listing and reading: it no longer holds a slot.
      if (code === 'ENOENT') continue;
      fail({ kind: 'io', what: file, message: `cannot read a running domain's status (${code ?? String(e)})` });
    }
    // Only guests with launchSecurity hold ASIDs and pinned memory; skip parsing the rest.
    if (!text.includes('<launchSecurity')) continue;
    const guest = sevGuestOf(text, file, overheadKiB);
    if (!guest) continue;
    if (guest.name === self.name || (self.uuid !== undefined && guest.uuid === self.uuid)) continue;
    out.push({ name: guest.name, file, es: guest.es, pinnedKiB: guest.pinnedKiB });
  }
  return out;
}

function sevGuestOf(text: string, file: string, overheadKiB: number): (RunningSevGuest & { uuid: string | undefined }) | undefined {
  try {
    const root = readXml(text, file).root;
    // libvirt wraps the live definition in <domstatus>; accept a bare <domain> too.
    const domain = root.name === 'domain' ? root : root.first('domain');
    if (!domain) fail({ kind: 'io', what: file, message: `no <domain> in <${root.name}>` });
    const ls = domain.first('launchSecurity');
    const type = ls?.attr('type');
    // SEV-SNP guests take their ASIDs from the SEV-ES pool.
    if (!ls || (type !== 'sev' && type !== 'sev-snp')) return undefined;
    const es = type === 'sev-snp' || (launchPolicy(ls, file) & POLICY_ES) !== 0;
    return {
      name: domain.first('name')?.text().trim() ?? entryName(file),
      uuid: domain.first('uuid')?.text().trim().toLowerCase(),
      file,
      es,
      pinnedKiB: pinnedMemoryKiB(domain, overheadKiB),
    };
  } catch (e: unknown) {
    if (e instanceof XmlInputError) fail({ kind: 'io', what: file, message: e.message.replace(`${file}: `, '') });
    if (e instanceof FailureError && e.failure.kind === 'refused')
      fail({ kind: 'io', what: file, message: renderFailure(e.failure).replace(/^sev-xform: /, '') });
    throw e;
  }
}

function entryName(file: string): string {
  return file.replace(/^.*\//, '').replace(/\.xml$/, '');
}
