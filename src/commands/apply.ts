// `sev-xform apply VM...`: dumpxml, convert, define, with the original kept
// on disk first so that a failed or interrupted define never loses a domain.

import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTwoFilesPatch } from 'diff';
import { FailureError, fail, renderFailure } from '../failure.js';
import { DEFAULT_STATE_DIR, stateDirOf } from '../host/cache.js';
import { hostFacts, type CommandResult } from '../host/facts.js';
import { readDomain, transformDocument } from '../transform.js';
import type { HostFacts, TransformOptions } from '../rules/types.js';
import type { Io } from '../io.js';
import { conversionOptions, firmwareDirsFrom, hostOptions, transformOptionsFrom } from './transform.js';
import { shellQuote } from '../hook/run.js';
import type { CommandSpec } from './types.js';

export const BACKUP_DIR = 'backup';

/** virsh's error on one line: it writes "error: Failed to define ..." and the reason on the next line. */
function virshError(r: CommandResult): string {
  if (r.error) return r.error;
  const lines = r.stderr
    .split('\n')
    .map((l) => l.trim().replace(/^error: /, ''))
    .filter(Boolean);
  return lines.join(': ') || `exit status ${r.status}`;
}

function virsh(io: Io, connect: string | undefined, args: readonly string[]): CommandResult {
  return io.run('virsh', connect ? ['--connect', connect, ...args] : args);
}

/** 20250131T235959.123Z: UTC, sortable as text, and free of the colons some tools choke on. */
function timestamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, '');
}

/** libvirt's canonical UUID form, which `virsh dumpxml` always prints. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the backup durably (file and folder entry on disk) as DIR/UUID-TIMESTAMP.xml, never over an
 * older one. Named by UUID, not by domain name: a name may be 1000 bytes or hold any character but
 * '/', and it must never decide a path that root writes.
 */
export function writeBackup(dir: string, uuid: string, xml: string, now: Date): string {
  if (!UUID.test(uuid)) throw new Error(`writeBackup: '${uuid}' is not a UUID`);
  try {
    // 0700: `dumpxml --security-info` includes passwords (VNC, SPICE).
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A second backup within the same millisecond takes the next free one, so that names keep the order of writing.
    for (let ms = 0; ; ms++) {
      const file = join(dir, `${uuid}-${timestamp(new Date(now.getTime() + ms))}.xml`);
      let fd: number;
      try {
        fd = openSync(file, 'wx', 0o600);
      } catch (e: unknown) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      try {
        writeSync(fd, xml);
        fsyncSync(fd);
      } catch (e: unknown) {
        closeSync(fd);
        // A partial backup must not be mistaken for the original.
        unlinkSync(file);
        throw e;
      }
      closeSync(fd);
      fsyncDir(dir);
      return file;
    }
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what: dir, message: `cannot write the backup (${code ?? String(e)}); nothing was defined` });
  }
}

/** The converted XML for `virsh define` (virsh takes a file; 0600 for the passwords in it). */
function writeTemp(vm: string, xml: string): { dir: string; file: string } {
  // A private folder from mkdtemp; the file in it has a fixed name, never the domain's.
  let dir: string | undefined;
  try {
    dir = mkdtempSync(join(tmpdir(), 'sev-xform-apply-'));
    const file = join(dir, 'domain.xml');
    writeFileSync(file, xml, { mode: 0o600 });
    return { dir, file };
  } catch (e: unknown) {
    if (dir) rmSync(dir, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what: tmpdir(), message: `cannot write the converted XML of ${vm} (${code ?? String(e)}); nothing was defined` });
  }
}

interface ApplySettings {
  options: TransformOptions;
  host: HostFacts;
  all: boolean;
  dryRun: boolean;
  backupDir: string;
  connect: string | undefined;
}

/** Converts and defines one domain; returns false when it failed (already reported). */
function applyOne(io: Io, vm: string, s: ApplySettings): boolean {
  const dumped = virsh(io, s.connect, ['dumpxml', '--inactive', '--security-info', '--domain', vm]);
  if (dumped.error || dumped.status !== 0) {
    io.stderr(`sev-xform: ${vm}: \`virsh dumpxml --inactive --security-info\` failed (${virshError(dumped)}); nothing changed\n`);
    return false;
  }
  const original = dumped.stdout;
  const doc = readDomain(original, `${vm}.xml`);
  const uuid = doc.root.first('uuid')?.text().trim() ?? '';
  const result = transformDocument(doc, original, s.options, s.host, { all: s.all });
  for (const w of result.warnings) io.stderr(`sev-xform: ${vm}: warning: ${w}\n`);
  if (!result.converted) {
    io.stderr(
      `sev-xform: ${vm}: not tagged, left unchanged; tag it with \`virsh metadata ${shellQuote(vm)} urn:sev-xform:domain:1 --key sev --set '<sev/>' --config\` or pass --all\n`,
    );
    return true;
  }
  if (result.changes.length === 0) {
    io.stderr(`sev-xform: ${vm}: already a correct SEV guest; nothing to change\n`);
    return true;
  }
  if (s.dryRun) {
    io.stdout(createTwoFilesPatch(`a/${vm}.xml`, `b/${vm}.xml`, original, result.output, '', '', { context: 3 }));
    return true;
  }

  if (!UUID.test(uuid)) {
    io.stderr(`sev-xform: ${vm}: domain/uuid '${uuid}' is not a UUID; the backup is named after it: nothing was defined\n`);
    return false;
  }
  const backup = writeBackup(s.backupDir, uuid, original, new Date());
  // Said before defining, so that whatever happens next the operator knows where the original is.
  io.stderr(`sev-xform: ${vm}: original definition saved to ${backup}\n`);
  const tmp = writeTemp(vm, result.output);
  try {
    const defined = virsh(io, s.connect, ['define', '--file', tmp.file]);
    if (defined.error || defined.status !== 0) {
      const restored = virsh(io, s.connect, ['define', '--file', backup]);
      const after =
        restored.error || restored.status !== 0
          ? `restoring the original failed too (${virshError(restored)}): run \`virsh define ${backup}\``
          : `the original definition was defined again from ${backup}`;
      io.stderr(`sev-xform: ${vm}: \`virsh define\` of the converted XML failed (${virshError(defined)}); ${after}\n`);
      return false;
    }
  } finally {
    rmSync(tmp.dir, { recursive: true, force: true });
  }
  for (const c of result.changes) io.stdout(`${vm}: ${c.rule}: ${c.message}\n`);
  io.stdout(`${vm}: defined as an SEV guest (${result.changes.length} change(s)); the original definition is in ${backup}\n`);
  const state = virsh(io, s.connect, ['domstate', '--domain', vm]);
  const now = state.status === 0 ? state.stdout.trim() : '';
  if (now !== '' && now !== 'shut off' && now !== 'crashed')
    io.stdout(`${vm}: is ${now}: the change applies at its next boot (shut it down and start it; a reboot inside the guest keeps the old definition)\n`);
  return true;
}

export const applyCommand: CommandSpec = {
  command: 'apply <vm..>',
  describe: 'convert libvirt domains in place: dumpxml, convert, define, keeping the original as a backup',
  builder: (y) =>
    conversionOptions(hostOptions(y))
      .positional('vm', { type: 'string', array: true, describe: 'domain names' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'print the diff; define nothing' })
      .option('state-dir', {
        type: 'string',
        describe: `backups go to STATE-DIR/${BACKUP_DIR}/UUID-TIMESTAMP.xml (default: $SEV_XFORM_STATE_DIR or ${DEFAULT_STATE_DIR})`,
      })
      .option('connect', { alias: 'c', type: 'string', describe: 'libvirt URI passed to virsh --connect' })
      .example('$0 apply --dry-run web1', 'show what would change')
      .example('$0 apply web1 web2', 'convert both; originals kept under /var/lib/sev-xform/backup/'),
  async run(io, args) {
    const connect = args['connect'] as string | undefined;
    const settings: ApplySettings = {
      options: transformOptionsFrom(args),
      host: hostFacts({
        domcaps: args['domcaps'] as string | undefined,
        firmwareDirs: firmwareDirsFrom(io, args['firmware-dirs']),
        // domcapabilities must come from the libvirt that will define the domain.
        run: (cmd, argv) => (cmd === 'virsh' ? virsh(io, connect, argv) : io.run(cmd, argv)),
        hostRoot: args['host-root'] as string | undefined,
      }),
      all: args['all'] === true,
      dryRun: args['dry-run'] === true,
      backupDir: join(stateDirOf(io.env, args['state-dir']), BACKUP_DIR),
      connect,
    };
    let ok = true;
    for (const vm of (args['vm'] as unknown[]).map(String)) {
      try {
        if (!applyOne(io, vm, settings)) ok = false;
      } catch (e: unknown) {
        if (!(e instanceof FailureError) || e.failure.kind === 'usage') throw e;
        io.stderr(`sev-xform: ${vm}: ${renderFailure(e.failure).replace(/^sev-xform: /, '')}\n`);
        ok = false;
      }
    }
    return ok ? 0 : 1;
  },
};
