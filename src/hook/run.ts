// libvirt's qemu hook: `sev-xform hook DOMAIN OPERATION SUB-OPERATION EXTRA`,
// the domain XML on stdin. It only accepts or refuses (prepare cannot rewrite a
// domain), it never calls libvirt (a deadlock is likely), and it reads the host
// only from the cache that `sev-xform host --write-cache` wrote.
//
// Deliberately free of yargs so that bin.ts can call it on a fast path.

import { join } from 'node:path';
import { FailureError, renderFailure } from '../failure.js';
import { CHECK_OPTIONS, checkDocument } from '../check.js';
import { TAG_NAMESPACE, findTag, isSevDomain } from '../domain/tag.js';
import { POLICY_ES } from '../domain/policy.js';
import { CACHE_FILE, hostFactsFromCache, readHostCache, stateDirOf } from '../host/cache.js';
import { readDomain } from '../transform.js';
import { decodeInput } from '../xml/read.js';
import { XmlInputError } from '../xml/errors.js';
import type { XmlDocument } from '../xml/xmlapi.js';
import type { Io } from '../io.js';
import { DEFAULT_HOOK_CONFIG, readHookConfig } from './config.js';
import { DEFAULT_RUN_DIR, launchPolicy, pinnedMemoryKiB, runningSevGuests, type RunningSevGuest } from './running.js';

/** Where the hook looks; each defaults to its environment variable, then to the system path. */
export interface HookOptions {
  /** Holds host.json; env SEV_XFORM_STATE_DIR, default /var/lib/sev-xform. */
  stateDir?: string;
  /** Live status XML of running domains; env SEV_XFORM_RUN_DIR, default /run/libvirt/qemu. */
  runDir?: string;
  /** env SEV_XFORM_HOOK_CONF, default /etc/sev-xform/hook.conf. */
  configFile?: string;
}

export interface HookPaths {
  cache: string;
  runDir: string;
  config: string;
}

export function hookPaths(io: Io, opts: HookOptions = {}): HookPaths {
  const env = (key: string): string | undefined => (io.env[key] ? io.env[key] : undefined);
  const stateDir = stateDirOf(io.env, opts.stateDir);
  return {
    cache: join(stateDir, CACHE_FILE),
    runDir: opts.runDir ?? env('SEV_XFORM_RUN_DIR') ?? DEFAULT_RUN_DIR,
    config: opts.configFile ?? env('SEV_XFORM_HOOK_CONF') ?? DEFAULT_HOOK_CONFIG,
  };
}

type Action = 'start' | 'migrate' | 'restore';

/** The only calls the hook acts on; libvirt uses no other sub-operation with these. */
const ACTIONS: Readonly<Record<string, Action>> = {
  'prepare begin': 'start',
  'migrate begin': 'migrate',
  'restore begin': 'restore',
};

/**
 * When the XML cannot be parsed, "is it an SEV domain?" is answered from the
 * text: libvirt writes the tag's namespace URI and `<launchSecurity` literally,
 * so their presence is the evidence. Erring towards SEV only refuses a domain
 * whose XML is broken anyway; erring the other way could boot it unencrypted.
 */
export function mentionsSev(text: string): boolean {
  return text.includes(TAG_NAMESPACE) || text.includes('<launchSecurity');
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_.:+@%=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function failureText(e: unknown): string {
  if (e instanceof FailureError) return renderFailure(e.failure).replace(/^sev-xform: /, '');
  return `internal error: ${e instanceof Error ? e.message : String(e)}`;
}

function refuseWith(io: Io, line: string): number {
  io.stderr(`sev-xform: ${line}\n`);
  return 1;
}

/** Runs the hook for libvirt's arguments (without the word `hook`); returns the exit code. */
export async function runHook(args: readonly string[], io: Io, opts: HookOptions = {}): Promise<number> {
  const [name, operation, subOperation = '-'] = args;
  if (!name || !operation || args.length > 4) {
    io.stderr('sev-xform: hook: usage: sev-xform hook DOMAIN OPERATION SUB-OPERATION EXTRA, with the domain XML on stdin (as libvirt calls it)\n');
    return 2;
  }
  const action = ACTIONS[`${operation} ${subOperation}`];
  if (!action) return 0;

  let bytes: Uint8Array = new Uint8Array();
  let doc: XmlDocument | undefined;
  let input = '';
  try {
    bytes = await io.readStdin();
    input = decodeInput(bytes, 'the domain XML on stdin');
    doc = readDomain(input, 'the domain XML on stdin', true);
  } catch (e: unknown) {
    const why = e instanceof XmlInputError ? e.message : failureText(e);
    if (mentionsSev(Buffer.from(bytes).toString('latin1')))
      return refuseWith(io, `refusing to ${action} ${name}: ${why}; it mentions the sev-xform tag or <launchSecurity>, so it is treated as an SEV domain`);
    io.stderr(`sev-xform: note: hook ${operation} ${subOperation} for ${name}: ${why}; it mentions neither the sev-xform tag nor <launchSecurity>, so it is not blocked\n`);
    return 0;
  }
  if (!isSevDomain(doc.root)) return 0;

  if (action === 'migrate')
    return refuseWith(io, `refusing to migrate ${name}: it is an SEV domain, and live migration of SEV guests is not supported (their memory is encrypted with a key that never leaves the source host); shut it down and start it here instead`);
  if (action === 'restore')
    return refuseWith(io, `refusing to restore ${name}: it is an SEV domain, and save/restore of SEV guests is not supported (a saved image resumes without a fresh encrypted launch); discard the saved state (\`virsh managedsave-remove ${shellQuote(name)}\`) and start it`);
  try {
    return prepare(io, name, input, doc, hookPaths(io, opts));
  } catch (e: unknown) {
    return refuseWith(io, `refusing to start ${name}: ${failureText(e)}`);
  }
}

function prepare(io: Io, name: string, input: string, doc: XmlDocument, paths: HookPaths): number {
  const domain = doc.root;
  const cache = readHostCache(paths.cache);
  const facts = hostFactsFromCache(cache, paths.cache);
  // Parsed before checking, so that a broken cache is reported as such and not as something to convert.
  const caps = facts.caps().sev;
  // Read before checking: the memory rule must count the same QEMU overhead as the admission check below.
  const config = readHookConfig(paths.config);
  const overheadKiB = config.qemuOverheadMiB * 1024;
  // The rules change the document only where they report a problem, and then it is not read again.
  const { problems } = checkDocument(doc, input, facts, { ...CHECK_OPTIONS, qemuOverheadKiB: overheadKiB }, 'the domain XML on stdin');
  const first = problems[0];
  if (first !== undefined) {
    const all = findTag(domain) ? '' : ' --all';
    const vm = shellQuote(name);
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more; \`sev-xform check\` lists them)` : '';
    const convert = `\`sev-xform apply${all} ${vm}\` or \`virsh dumpxml --inactive ${vm} | sev-xform${all} | virsh define /dev/stdin\``;
    // checkDomain phrases what conversion would change as "RULE: needs change: ..."; the rest is a refusal or a host fault.
    const advice = /^[a-z0-9-]+: needs change: /.test(first)
      ? `convert it with ${convert}`
      : first.startsWith('host: ')
        ? 'this host cannot run it as an SEV guest (see `sev-xform host`)'
        : `fix that, then convert it with ${convert}`;
    return refuseWith(io, `refusing to start ${name} unencrypted: ${first}${more}; ${advice}`);
  }

  // A correct SEV guest has launchSecurity with a policy (checkDomain would have said otherwise).
  const es = (launchPolicy(domain.first('launchSecurity')!, 'the domain XML on stdin') & POLICY_ES) !== 0;
  const self = { name, uuid: domain.first('uuid')?.text().trim().toLowerCase() };
  const running = runningSevGuests(paths.runDir, self, overheadKiB);

  // SEV and SEV-ES guests draw on separate pools of ASIDs (encryption key slots).
  const slots = es ? caps.maxESGuests : caps.maxGuests;
  const kind = es ? 'SEV-ES' : 'SEV';
  const peers = running.filter((g) => g.es === es);
  // 0 is what hosts that only emulate SEV report (as the launch-security rule notes); a real SEV host has slots.
  if (slots !== undefined && slots > 0 && peers.length + 1 > slots)
    return refuseWith(
      io,
      `refusing to start ${name}: the host has ${slots} ${kind} guest slot(s) (<${es ? 'maxESGuests' : 'maxGuests'}> in ${paths.cache}) and ${peers.length} ${kind} guest(s) already run (${names(peers)})`,
    );

  const ownKiB = pinnedMemoryKiB(domain, overheadKiB);
  const othersKiB = running.reduce((s, g) => s + g.pinnedKiB, 0);
  const usableKiB = cache.memTotalKiB - config.reserveMiB * 1024;
  if (ownKiB + othersKiB > usableKiB)
    return refuseWith(
      io,
      `refusing to start ${name}: its memory (${mib(ownKiB)} MiB: pinned RAM, video and ROMs plus ${config.qemuOverheadMiB} MiB for QEMU itself) plus that of ${running.length} running SEV guest(s) (${mib(othersKiB)} MiB) exceeds MemTotal ${mib(cache.memTotalKiB)} MiB (${paths.cache}) minus the ${config.reserveMiB} MiB reserve (reserve_mib in ${paths.config}); SEV memory is pinned and cannot be over-committed`,
    );
  return 0;
}

function mib(kib: number): number {
  return Math.ceil(kib / 1024);
}

function names(guests: readonly RunningSevGuest[]): string {
  const shown = guests.slice(0, 3).map((g) => g.name);
  return guests.length > 3 ? `${shown.join(', ')} and ${guests.length - 3} more` : shown.join(', ') || 'none';
}
