// libvirt's qemu hook: `sev-xform hook DOMAIN OPERATION SUB-OPERATION EXTRA`,
// the domain XML on stdin. It only accepts or refuses (prepare cannot rewrite a
// domain), it never calls libvirt (a deadlock is likely), and it reads the host
// only from the cache that `sev-xform host --write-cache` wrote.
//
// Deliberately free of yargs so that bin.ts can call it on a fast path.

import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { FailureError, renderFailure } from '../failure.js';
import { CHECK_OPTIONS, checkDocument } from '../check.js';
import { isSevDomain, isSevLaunchType, sevXformElements } from '../domain/tag.js';
import { POLICY_ES } from '../domain/policy.js';
import { CACHE_FILE, hostFactsFromCache, readHostCache, stateDirOf } from '../host/cache.js';
import { readDomain } from '../transform.js';
import { MAX_INPUT_BYTES, decodeInput } from '../xml/read.js';
import { XmlInputError } from '../xml/errors.js';
import type { XmlDocument } from '../xml/xmlapi.js';
import type { Io } from '../io.js';
import { DEFAULT_HOOK_CONFIG, readHookConfig } from './config.js';
import { DEFAULT_RUN_DIR, launchPolicy, pinnedMemoryKiB, runningSevGuests } from './running.js';
import { DEFAULT_LOCK_DIR, dropReservation, liveReservations, lockPrepare, reserve } from './reservations.js';

/** Where the hook looks; each defaults to its environment variable, then to the system path. */
export interface HookOptions {
  /** Holds host.json; env SEV_XFORM_STATE_DIR, default /var/lib/sev-xform. */
  stateDir?: string;
  /** Live status XML of running domains; env SEV_XFORM_RUN_DIR, default /run/libvirt/qemu. */
  runDir?: string;
  /** env SEV_XFORM_HOOK_CONF, default /etc/sev-xform/hook.conf. */
  configFile?: string;
  /** The prepare lock and reservations; env SEV_XFORM_LOCK_DIR, default /run/sev-xform. */
  lockDir?: string;
  /** The clock, for reservation ages. */
  now?: () => number;
}

export interface HookPaths {
  cache: string;
  runDir: string;
  config: string;
  lockDir: string;
}

export function hookPaths(io: Io, opts: HookOptions = {}): HookPaths {
  const env = (key: string): string | undefined => (io.env[key] ? io.env[key] : undefined);
  const stateDir = stateDirOf(io.env, opts.stateDir);
  return {
    cache: join(stateDir, CACHE_FILE),
    runDir: opts.runDir ?? env('SEV_XFORM_RUN_DIR') ?? DEFAULT_RUN_DIR,
    config: opts.configFile ?? env('SEV_XFORM_HOOK_CONF') ?? DEFAULT_HOOK_CONFIG,
    lockDir: opts.lockDir ?? env('SEV_XFORM_LOCK_DIR') ?? DEFAULT_LOCK_DIR,
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
 * Literal text that libvirt writes for an SEV domain: a sev-xform namespace URI (any version, as the
 * shim matches it), or launchSecurity.
 */
const SEV_MARKERS: readonly string[] = ['urn:sev-xform', '<launchSecurity'];

/** Markup whose content is not markup: comments, CDATA sections, processing instructions (and the XML declaration). */
const OPAQUE: ReadonlyArray<readonly [string, string]> = [
  ['<!--', '-->'],
  ['<![CDATA[', ']]>'],
  ['<?', '?>'],
];

/**
 * When the XML cannot be parsed, "is it an SEV domain?" is answered from the
 * text, but only from markup: a namespace declaration whose value is the tag's
 * URI, or a `<launchSecurity` start tag of an SEV type. Comments, CDATA,
 * processing instructions, character data (<description>, another namespace's
 * metadata) and other attributes' values do not count: the URI in a comment
 * once got an innocent domain refused. Erring towards SEV only refuses a domain
 * whose XML is broken anyway; erring the other way could boot it unencrypted.
 */
export function mentionsSev(text: string): boolean {
  let i = 0;
  for (;;) {
    const lt = text.indexOf('<', i);
    if (lt < 0) return false;
    const opaque = OPAQUE.find(([open]) => text.startsWith(open, lt));
    if (opaque) {
      const [open, close] = opaque;
      const end = text.indexOf(close, lt + open.length);
      // Unterminated: the rest is inside it, for any XML reader.
      if (end < 0) return false;
      i = end + close.length;
      continue;
    }
    const end = tagEnd(text, lt);
    const tag = text.slice(lt, end);
    if (/^<launchSecurity(?:[\s/>]|$)/.test(tag)) {
      const type = /\stype\s*=\s*(['"])(.*?)\1/.exec(tag)?.[2];
      if (isSevLaunchType(type)) return true;
    }
    if (/\sxmlns(?::[^\s=]+)?\s*=\s*(['"])\s*urn:sev-xform/i.test(tag)) return true;
    i = end + 1;
  }
}

/** Index of the `>` ending the tag that starts at `lt` (quotes respected), or the text's end. */
function tagEnd(text: string, lt: number): number {
  let quote = '';
  for (let p = lt + 1; p < text.length; p++) {
    const c = text[p];
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '>') return p;
    else if (c === '<') return p - 1;
  }
  return text.length;
}

/** The markers as a scan looks for them: lower case, since the shim matches the namespace in any case. */
const SCAN_MARKERS: readonly string[] = SEV_MARKERS.map((m) => m.toLowerCase());
const SCAN_OVERLAP = Math.max(...SCAN_MARKERS.map((m) => m.length)) - 1;
const SCAN_SLICE = 1024 * 1024;

/** True when any marker occurs in the bytes, ASCII letters compared in any case; `scratch` holds the lowered copy. */
function bytesMention(bytes: Uint8Array, scratch: Buffer): boolean {
  const lowered = scratch.subarray(0, bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    lowered[i] = b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
  }
  return SCAN_MARKERS.some((m) => lowered.includes(m, 0, 'latin1'));
}

/**
 * An input over the limit is not parsed; it is an SEV domain when an SEV marker occurs anywhere in
 * it, including the part past the limit, which is read on. Both are scanned in 1 MiB slices that
 * overlap by a marker's length less one byte, so memory stays bounded. An XML past the limit hid a tag once.
 */
async function overLimitMentionsSev(first: Uint8Array, io: Io): Promise<boolean> {
  const scratch = Buffer.allocUnsafe(SCAN_SLICE + SCAN_OVERLAP);
  const window = Buffer.allocUnsafe(SCAN_SLICE + SCAN_OVERLAP);
  let carried = 0;
  /** Scans `chunk` after the last SCAN_OVERLAP bytes seen before it. */
  const scan = (chunk: Uint8Array): boolean => {
    for (let at = 0; at < chunk.length; at += SCAN_SLICE) {
      const part = chunk.subarray(at, at + SCAN_SLICE);
      window.set(part, carried);
      const size = carried + part.length;
      if (bytesMention(window.subarray(0, size), scratch)) return true;
      carried = Math.min(SCAN_OVERLAP, size);
      window.copyWithin(0, size - carried, size);
    }
    return false;
  };
  if (scan(first)) return true;
  // Nothing can look at the rest: an input that may hide the tag is treated as SEV.
  if (!io.readStdinRest) return true;
  for await (const chunk of io.readStdinRest()) if (scan(chunk)) return true;
  return false;
}

/** Longest name shown whole in a message: libvirt takes names of any length, one stderr line should stay readable. */
const SHOWN_NAME_MAX = 256;

/**
 * A name as shown in one stderr line: control characters (a newline would start a second line)
 * become '?', and a very long name is cut (a 128 KiB name made a 390 KB refusal line).
 */
function shownName(name: string): string {
  const line = name.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '?');
  return line.length > SHOWN_NAME_MAX ? `${line.slice(0, SHOWN_NAME_MAX)}...(${line.length} characters)` : line;
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
  const [rawName = '', operation, subOperation = '-'] = args;
  // The name may be empty or anything else (libvirt's call passes it verbatim); only the operation must be there.
  if (operation === undefined || args.length > 4) {
    io.stderr('sev-xform: hook: usage: sev-xform hook DOMAIN OPERATION SUB-OPERATION EXTRA, with the domain XML on stdin (as libvirt calls it)\n');
    return 2;
  }
  const name = shownName(rawName);
  if (operation === 'started' || operation === 'stopped' || operation === 'release') {
    // started: the guest's status XML now exists and counts; stopped/release: it no longer runs.
    // Nothing can be aborted here, so a fault is a note and exit 0; a stale reservation expires anyway.
    try {
      dropReservation(hookPaths(io, opts).lockDir, rawName);
    } catch (e: unknown) {
      io.stderr(`sev-xform: note: hook ${operation} for ${name}: ${failureText(e)}\n`);
    }
    return 0;
  }
  const action = ACTIONS[`${operation} ${subOperation}`];
  if (!action) return 0;

  let bytes: Uint8Array = new Uint8Array();
  let doc: XmlDocument | undefined;
  let input = '';
  try {
    bytes = await io.readStdin();
    if (bytes.length > MAX_INPUT_BYTES) {
      if (await overLimitMentionsSev(bytes, io))
        return refuseWith(io, `refusing to ${action} ${name}: the domain XML on stdin is larger than the 64 MiB limit and mentions the sev-xform tag or <launchSecurity>, so it is treated as an SEV domain that cannot be checked`);
      io.stderr(`sev-xform: note: hook ${operation} ${subOperation} for ${name}: the domain XML on stdin is larger than the 64 MiB limit; it mentions neither the sev-xform tag nor <launchSecurity> anywhere, so it is not blocked\n`);
      return 0;
    }
    input = decodeInput(bytes, 'the domain XML on stdin');
    doc = readDomain(input, 'the domain XML on stdin', true);
  } catch (e: unknown) {
    const why = e instanceof XmlInputError ? e.message : failureText(e);
    if (mentionsSev(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')))
      return refuseWith(io, `refusing to ${action} ${name}: ${why}; it declares the sev-xform tag's namespace or has <launchSecurity>, so it is treated as an SEV domain`);
    io.stderr(`sev-xform: note: hook ${operation} ${subOperation} for ${name}: ${why}; it has neither the sev-xform tag nor <launchSecurity>, so it is not blocked\n`);
    return 0;
  }
  if (!isSevDomain(doc.root)) return 0;

  if (action === 'migrate')
    return refuseWith(io, `refusing to migrate ${name}: it is an SEV domain, and live migration of SEV guests is not supported (their memory is encrypted with a key that never leaves the source host); shut it down and start it here instead`);
  if (action === 'restore')
    return refuseWith(io, `refusing to restore ${name}: it is an SEV domain, and save/restore of SEV guests is not supported (a saved image resumes without a fresh encrypted launch); discard the saved state (\`virsh managedsave-remove ${shellQuote(name)}\`) and start it`);
  try {
    return prepare(io, name, rawName, input, doc, hookPaths(io, opts), opts.now ?? Date.now);
  } catch (e: unknown) {
    return refuseWith(io, `refusing to start ${name}: ${failureText(e)}`);
  }
}

function prepare(io: Io, name: string, rawName: string, input: string, doc: XmlDocument, paths: HookPaths, now: () => number): number {
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
    const all = sevXformElements(domain).length > 0 ? '' : ' --all';
    // A cut name would be the wrong name in a command: then the commands say VM.
    const vm = name === rawName ? shellQuote(name) : 'VM';
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
  const ls = domain.first('launchSecurity')!;
  const snp = ls.attr('type') === 'sev-snp';
  // SEV-SNP guests take their ASIDs from the SEV-ES range (the kernel's 1..min_sev_asid-1), shared with SEV-ES guests.
  const es = snp || (launchPolicy(ls, 'the domain XML on stdin') & POLICY_ES) !== 0;
  const self = { name: rawName, uuid: domain.first('uuid')?.text().trim().toLowerCase() };
  const ownKiB = pinnedMemoryKiB(domain, overheadKiB);

  // From here to the reservation, one prepare at a time: libvirt writes a guest's status XML only
  // after its prepare, so two concurrent checks would each miss the other.
  const lock = lockPrepare(paths.lockDir, io);
  try {
    const running = runningSevGuests(paths.runDir, self, overheadKiB);
    const reserved = liveReservations(paths.lockDir, self, running, now());
    const others = [...running, ...reserved];

    // SEV and SEV-ES guests draw on separate pools of ASIDs (encryption key slots).
    const slots = es ? caps.maxESGuests : caps.maxGuests;
    const kind = snp ? 'SEV-ES/SEV-SNP' : es ? 'SEV-ES' : 'SEV';
    const peers = others.filter((g) => g.es === es);
    // 0 is what hosts that only emulate SEV report (as the launch-security rule notes); a real SEV host has slots.
    if (slots !== undefined && slots > 0 && peers.length + 1 > slots)
      return refuseWith(
        io,
        `refusing to start ${name}: the host has ${slots} ${kind} guest slot(s) (<${es ? 'maxESGuests' : 'maxGuests'}> in ${paths.cache}) and ${peers.length} ${kind} guest(s) already run or are starting (${names(peers)})`,
      );

    const othersKiB = others.reduce((s, g) => s + g.pinnedKiB, 0);
    const usableKiB = cache.memTotalKiB - config.reserveMiB * 1024;
    if (ownKiB + othersKiB > usableKiB)
      return refuseWith(
        io,
        `refusing to start ${name}: its memory (${mib(ownKiB)} MiB: pinned RAM, video and ROMs plus ${config.qemuOverheadMiB} MiB for QEMU itself and 1/256 of RAM for its page tables) plus that of ${others.length} running or starting SEV guest(s) (${mib(othersKiB)} MiB) exceeds MemTotal ${mib(cache.memTotalKiB)} MiB (${paths.cache}) minus the ${config.reserveMiB} MiB reserve (reserve_mib in ${paths.config}); SEV memory is pinned and cannot be over-committed`,
      );
    reserve(paths.lockDir, { name: rawName, uuid: self.uuid, es, pinnedKiB: ownKiB });
    return 0;
  } finally {
    closeSync(lock);
  }
}

function mib(kib: number): number {
  return Math.ceil(kib / 1024);
}

function names(guests: ReadonlyArray<{ name: string }>): string {
  const shown = guests.slice(0, 3).map((g) => shownName(g.name));
  return guests.length > 3 ? `${shown.join(', ')} and ${guests.length - 3} more` : shown.join(', ') || 'none';
}
