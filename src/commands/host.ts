import { chmodSync, closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fail } from '../failure.js';
import { CACHE_FILE, CACHE_VERSION, DEFAULT_STATE_DIR, serializeHostCache, stateDirOf, type HostCache } from '../host/cache.js';
import { detectHost, hostPath, type HostCheck, type HostReport } from '../host/detect.js';
import { hostOptions } from './transform.js';
import type { CommandSpec } from './types.js';

function checkLine(c: HostCheck): string {
  return `${c.status.padEnd(9)}${c.title}: ${c.detail}${c.fix ? `; fix: ${c.fix}` : ''}`;
}

export function renderHostReport(r: HostReport): string {
  const lines = r.root === '/' ? [] : [`root     ${r.root} (files read under it; paths below are as the host sees them)`];
  lines.push(...r.checks.map(checkLine));
  lines.push(`traits   ${r.traits.length > 0 ? r.traits.join(' ') : 'none'}`);
  const missing = r.checks.filter((c) => c.blocks === 'sev').length;
  if (!r.sev) lines.push(`verdict  SEV guests cannot run here (${missing} missing)`);
  else {
    // SEV-SNP is named only when it can run: SEV does not need it (its checks are 'info').
    const can = r.sevSnp ? (r.sevEs ? 'SEV, SEV-ES and SEV-SNP' : 'SEV and SEV-SNP') : r.sevEs ? 'SEV and SEV-ES' : 'SEV';
    lines.push(`verdict  ${can} guests can run here${r.sevEs ? '' : '; SEV-ES guests cannot (see the warn lines)'}`);
  }
  return lines.join('\n') + '\n';
}

function jsonReport(r: HostReport, cacheFile: string | null): string {
  const { domcapsXml: _xml, ...rest } = r;
  return (
    JSON.stringify(
      {
        ...rest,
        firmware: r.firmware.map((d) => ({ file: d.file, features: d.features })),
        cacheFile,
      },
      null,
      2,
    ) + '\n'
  );
}

/** The cache the hook reads, with paths as the host sees them (root taken off). */
export function hostCacheOf(r: HostReport, now: Date): HostCache {
  if (r.domcapsXml === null || r.domcaps.sev === null)
    fail({ kind: 'host', message: `cannot write the host cache: domcapabilities unknown (${r.domcaps.error ?? 'not read'})` });
  if (r.memTotalKiB === null) fail({ kind: 'host', message: `cannot write the host cache: no MemTotal in ${join(r.root, 'proc/meminfo')}` });
  return {
    version: CACHE_VERSION,
    written: now.toISOString(),
    domcaps: r.domcapsXml,
    firmware: r.firmware.map((d) => ({ ...d, file: hostPath(r.root, d.file) })),
    firmwareDirs: r.firmwareDirs.map((d) => hostPath(r.root, d)),
    memTotalKiB: r.memTotalKiB,
  };
}

/** Writes `text` to dir/name atomically: the hook must never read a half-written cache. */
export function writeFileAtomic(dir: string, name: string, text: string): string {
  const target = join(dir, name);
  // A new private folder beside the target, named by mkdtemp (randomness without loading node:crypto,
  // 8 ms of every `host` run), so that the rename stays on one filesystem.
  let tempDir: string | undefined;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    tempDir = mkdtempSync(join(dir, `.${name}.`));
    const temp = join(tempDir, name);
    const fd = openSync(temp, 'wx', 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(temp, 0o644); // the umask may have narrowed it; the hook may run as another user
    renameSync(temp, target);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what: '--write-cache', message: `cannot write ${target} (${code ?? String(e)})` });
  } finally {
    if (tempDir !== undefined) rmSync(tempDir, { recursive: true, force: true });
  }
  return target;
}

export const hostCommand: CommandSpec = {
  command: 'host',
  describe: 'report whether this host can run SEV (and SEV-ES) guests and how to fix what is missing; exit 1 if SEV guests cannot run',
  builder: (y) =>
    hostOptions(y)
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
      .option('root', {
        type: 'string',
        describe: 'read /proc, /sys, /dev and the default firmware folders under DIR (a host image, or a fake root for tests); versions and domcapabilities still come from commands run here unless --domcaps is given',
      })
      .option('write-cache', { type: 'boolean', describe: `store the host facts for the hook in ${DEFAULT_STATE_DIR}/${CACHE_FILE}` })
      .option('state-dir', { type: 'string', describe: `folder for --write-cache (default: ${DEFAULT_STATE_DIR})` })
      .example('$0 host', 'can this host run SEV guests?')
      .example('$0 host --write-cache', 'also store the facts the hook needs'),
  async run(io, args) {
    const rootArg = args['root'] as string | undefined;
    const root = resolve(rootArg ?? '/');
    if (rootArg !== undefined) {
      let isDir = false;
      try {
        isDir = statSync(root).isDirectory();
      } catch {
        isDir = false;
      }
      if (!isDir) fail({ kind: 'usage', message: `--root ${rootArg}: not a directory` });
    }
    const stateDirArg = args['state-dir'] as string | undefined;
    const writeCache = args['write-cache'] === true;
    if (stateDirArg !== undefined && !writeCache) fail({ kind: 'usage', message: '--state-dir is only used with --write-cache' });
    // A cache describes one host: writing a host image's facts into this host's state folder would mislead the hook.
    if (writeCache && root !== '/' && stateDirArg === undefined)
      fail({ kind: 'usage', message: '--write-cache with --root needs --state-dir (the cache would describe DIR, not this host)' });
    const firmwareDirsArg = args['firmware-dirs'] as string | undefined;
    const report = detectHost({
      root,
      run: io.run,
      home: io.env['HOME'],
      firmwareDirs: firmwareDirsArg ? firmwareDirsArg.split(',').filter(Boolean) : undefined,
      domcapsFile: args['domcaps'] as string | undefined,
    });
    let cacheFile: string | null = null;
    let cacheError: unknown;
    if (writeCache) {
      try {
        cacheFile = writeFileAtomic(stateDirOf(io.env, stateDirArg), CACHE_FILE, serializeHostCache(hostCacheOf(report, new Date())));
      } catch (e: unknown) {
        cacheError = e;
      }
    }
    io.stdout(args['json'] === true ? jsonReport(report, cacheFile) : renderHostReport(report));
    if (cacheError !== undefined) throw cacheError;
    if (cacheFile !== null && args['json'] !== true) io.stderr(`sev-xform: host cache written to ${cacheFile}\n`);
    return report.sev ? 0 : 1;
  },
};
