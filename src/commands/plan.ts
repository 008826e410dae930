import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../failure.js';
import { isSevDomain } from '../domain/tag.js';
import { DEFAULT_SEV_POLICY, formatPolicy, parsePolicy } from '../domain/policy.js';
import { parseDomainCaps, type SevCaps } from '../host/domcaps.js';
import { parseHostCache } from '../host/cache.js';
import { DEFAULT_RESERVE_MIB, parseHookConfig } from '../hook/config.js';
import { DEFAULT_QEMU_OVERHEAD_MIB } from '../domain/memory.js';
import { parseOverheadSize } from '../domain/units.js';
import { hookPaths } from '../hook/run.js';
import { readDomain } from '../transform.js';
import { countedGuests, domainGuest, makePlan, memTotalFromMeminfo, parseSize, renderPlan, type PlannedGuest, type SkippedDomain } from '../plan.js';
import type { Io } from '../io.js';
import { readInput } from './input.js';
import type { CommandSpec } from './types.js';

const MEMINFO = '/proc/meminfo';

/** The file's text, or null when it does not exist; any other failure names the file. */
function readOptional(io: Io, path: string, what: string): string | null {
  try {
    return Buffer.from(io.readFile(path)).toString('utf8');
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    fail({ kind: 'io', what: path, message: `cannot read the ${what} (${code ?? String(e)})` });
  }
}

/** The hook's configuration text and path, or null text when the file is absent. */
function hookConfigText(io: Io): { path: string; text: string | null } {
  const path = hookPaths(io).config;
  return { path, text: readOptional(io, path, 'hook configuration') };
}

/** A hook.conf setting in KiB, so that a plan that fits is one the hook admits: the option, else the file, else the hook's default. */
function hookSetting(
  io: Io,
  option: unknown,
  flag: string,
  key: 'reserve_mib' | 'qemu_overhead_mib',
  parse: (text: string, option: string) => number,
): { kib: number; source: string } {
  if (typeof option === 'string') return { kib: parse(option, flag), source: flag };
  const { path, text } = hookConfigText(io);
  const config = text === null ? undefined : parseHookConfig(text, path);
  const mibValue = key === 'reserve_mib' ? (config?.reserveMiB ?? DEFAULT_RESERVE_MIB) : (config?.qemuOverheadMiB ?? DEFAULT_QEMU_OVERHEAD_MIB);
  if (text === null) return { kib: mibValue * 1024, source: `the hook's default; ${path} absent` };
  const set = new RegExp(`^\\s*${key}\\s*=`, 'm').test(text);
  return { kib: mibValue * 1024, source: set ? `${key} in ${path}` : `the hook's default; not set in ${path}` };
}

function memTotal(option: unknown): { kib: number; source: string } {
  if (typeof option === 'string') return { kib: parseSize(option, '--mem-total'), source: '--mem-total' };
  let text: string;
  try {
    // Read directly, not through io.readFile: procfs files report size 0, which a size-bounded reader takes for empty.
    text = readFileSync(MEMINFO, 'utf8');
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what: MEMINFO, message: `cannot read the memory size (${code ?? String(e)}); pass --mem-total SIZE` });
  }
  return { kib: memTotalFromMeminfo(text, MEMINFO), source: MEMINFO };
}

/** --domcaps, else the host cache (explicit --cache, or the default one when present), else none. */
function sevCaps(io: Io, domcaps: unknown, cacheOption: unknown): { caps: SevCaps | null; source: string } {
  if (typeof domcaps === 'string') {
    const text = readOptional(io, domcaps, 'domain capabilities');
    if (text === null) fail({ kind: 'io', what: domcaps, message: 'cannot read the domain capabilities (ENOENT)' });
    return { caps: parseDomainCaps(text, domcaps).sev, source: domcaps };
  }
  const path = typeof cacheOption === 'string' ? cacheOption : hookPaths(io).cache;
  const text = readOptional(io, path, 'host cache');
  if (text === null) {
    if (typeof cacheOption === 'string') fail({ kind: 'io', what: path, message: 'cannot read the host cache (ENOENT)' });
    return { caps: null, source: `no --domcaps, and no host cache at ${path} (\`sev-xform host --write-cache\` writes it)` };
  }
  const cache = parseHostCache(text, path);
  return { caps: parseDomainCaps(cache.domcaps, `host cache ${path}`).sev, source: path };
}

function domainFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    fail({ kind: 'io', what: dir, message: `cannot list the domain folder (${code ?? String(e)})` });
  }
  return names
    .filter((n) => n.endsWith('.xml'))
    .sort()
    .map((n) => join(dir, n));
}

function countOf(value: unknown): number {
  const text = String(value).trim();
  if (!/^[0-9]+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text)))
    fail({ kind: 'usage', message: `--guests '${String(value)}' is not a whole number of guests (1 or more)` });
  return Number(text);
}

export const planCommand: CommandSpec = {
  command: 'plan [files..]',
  describe: 'how much host memory and how many SEV slots a set of SEV guests needs; exit 1 if they do not fit',
  builder: (y) =>
    y
      .positional('files', { type: 'string', array: true, describe: 'domain XML files; only tagged or launchSecurity domains count' })
      .option('domains', { type: 'string', describe: 'a folder of domain XML files (*.xml), e.g. a copy of /etc/libvirt/qemu' })
      .option('guests', { type: 'string', describe: 'plan N guests of the same size (with --memory)' })
      .option('memory', { type: 'string', describe: "RAM of each --guests guest, libvirt's units: 4GiB, 512MiB, 4G (= GiB); no unit means KiB" })
      .option('video', { type: 'string', describe: 'video memory of each --guests guest (default 0; libvirt counts ram + vram + vram64 + vgamem: qxl 144MiB, vga 16MiB, virtio 0)' })
      .option('policy', { type: 'string', describe: `SEV policy of the --guests guests (default ${formatPolicy(DEFAULT_SEV_POLICY)}); with the SEV-ES bit 0x4, e.g. 0x0037, they take SEV-ES slots` })
      .option('host-reserve', {
        type: 'string',
        describe: `memory SEV guests may never pin (default: reserve_mib in $SEV_XFORM_HOOK_CONF or /etc/sev-xform/hook.conf, else the hook's ${DEFAULT_RESERVE_MIB}MiB)`,
      })
      .option('qemu-overhead', {
        type: 'string',
        describe: `QEMU's own memory per guest above what SEV pins, with a unit, e.g. 256MiB (default: qemu_overhead_mib in hook.conf, else ${DEFAULT_QEMU_OVERHEAD_MIB}MiB); the filter's --qemu-overhead`,
      })
      .option('mem-total', { type: 'string', describe: `the host's memory (default: MemTotal in ${MEMINFO})` })
      .option('domcaps', { type: 'string', describe: 'host domain capabilities XML, for maxGuests and maxESGuests' })
      .option('cache', {
        type: 'string',
        describe: 'host cache written by `host --write-cache` (default: $SEV_XFORM_STATE_DIR/host.json or /var/lib/sev-xform/host.json, when present)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' })
      .example('$0 plan --guests 8 --memory 4GiB --mem-total 64GiB --domcaps caps.xml', 'do eight 4 GiB SEV guests fit on a 64 GiB host?')
      .example('$0 plan --domains domains/', 'do the tagged domains in a folder fit on this host?'),
  async run(io, args) {
    const files = ((args['files'] as unknown[] | undefined) ?? []).map(String);
    const dir = args['domains'] as string | undefined;
    const guestsArg = args['guests'];
    const perGuest = ['memory', 'policy', 'video'].filter((o) => args[o] !== undefined);
    if (guestsArg === undefined && perGuest.length > 0)
      fail({ kind: 'usage', message: `--${perGuest[0]} describes the --guests guests: give --guests N too` });
    if (guestsArg !== undefined && args['memory'] === undefined) fail({ kind: 'usage', message: '--guests needs --memory SIZE (the RAM of each guest)' });
    if (guestsArg === undefined && dir === undefined && files.length === 0)
      fail({ kind: 'usage', message: 'nothing to plan: give --guests N --memory SIZE, --domains DIR, or domain XML files' });

    const overhead = hookSetting(io, args['qemu-overhead'], '--qemu-overhead', 'qemu_overhead_mib', parseOverheadSize);
    const guests: PlannedGuest[] = [];
    const skipped: SkippedDomain[] = [];
    if (guestsArg !== undefined) {
      const count = countOf(guestsArg);
      const ram = parseSize(String(args['memory']), '--memory');
      const video = parseSize(String(args['video'] ?? '0'), '--video');
      const policy = parsePolicy(String(args['policy'] ?? formatPolicy(DEFAULT_SEV_POLICY)), '--policy');
      guests.push(countedGuests(count, ram, video, policy, overhead.kib));
    }
    for (const file of [...(dir !== undefined ? domainFiles(dir) : []), ...files]) {
      const domain = readDomain(await readInput(io, file), file).root;
      if (isSevDomain(domain)) guests.push(domainGuest(domain, file, overhead.kib));
      else skipped.push({ source: file, reason: 'neither the sev-xform tag nor <launchSecurity>: not an SEV guest' });
    }

    const reserve = hookSetting(io, args['host-reserve'], '--host-reserve', 'reserve_mib', parseSize);
    const total = memTotal(args['mem-total']);
    const caps = sevCaps(io, args['domcaps'], args['cache']);
    const plan = makePlan({
      guests,
      skipped,
      hostReserveKiB: reserve.kib,
      hostReserveSource: reserve.source,
      memTotalKiB: total.kib,
      memTotalSource: total.source,
      caps: caps.caps,
      capsSource: caps.source,
    });
    io.stdout(args['json'] === true ? JSON.stringify(plan, null, 2) + '\n' : renderPlan(plan));
    for (const p of plan.problems) io.stderr(`sev-xform: plan: does not fit: ${p}\n`);
    return plan.fits ? 0 : 1;
  },
};
