// A fake host for the hook: a state folder with host.json, a folder of live
// status XML standing in for /run/libvirt/qemu, and a hook.conf path.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFirmwareDescriptors } from '../../src/host/firmware.js';
import { serializeHostCache, type HostCache } from '../../src/host/cache.js';
import { hostFacts } from '../../src/host/facts.js';
import { transformDomain } from '../../src/transform.js';

export const FIX = 'test/fixtures-hook';

export function fixture(name: string): string {
  return readFileSync(join(FIX, name), 'utf8');
}

/** The fixture host's domcaps and firmware folder, as command-line options. */
export const HOST_ARGS = ['--domcaps', join(FIX, 'domcaps-sev-es.xml'), '--firmware-dirs', join(FIX, 'firmware')];

/**
 * A domain converted by the filter on the fixture host, computed rather than
 * stored so that these tests follow the rules as they change.
 */
export function convert(xml: string): string {
  const host = hostFacts({
    domcaps: join(FIX, 'domcaps-sev-es.xml'),
    firmwareDirs: [join(FIX, 'firmware')],
    run: () => ({ status: null, stdout: '', stderr: '', error: 'no virsh in tests' }),
  });
  const r = transformDomain(xml, { firmware: 'auto' }, host, { all: true });
  if (r.changes.length === 0) throw new Error('convert(): nothing changed');
  return r.output;
}

/** The SEV-ES host's domcaps (cbitpos 51) with the given slot counts. */
export function domcaps(maxGuests = 494, maxESGuests = 15): string {
  return fixture('domcaps-sev-es.xml')
    .replace(/<maxGuests>\d+<\/maxGuests>/, `<maxGuests>${maxGuests}</maxGuests>`)
    .replace(/<maxESGuests>\d+<\/maxESGuests>/, `<maxESGuests>${maxESGuests}</maxESGuests>`);
}

export interface RunningDomain {
  xml: string;
  name: string;
  uuid: string;
}

export interface HookEnv {
  root: string;
  stateDir: string;
  cache: string;
  runDir: string;
  config: string;
  /** The lock and reservation folder (not created: the hook creates it). */
  lockDir: string;
  env: Record<string, string>;
}

export const GiB = 1024 * 1024;

/** Writes a fake host; `cache: false` leaves host.json out, a string writes it verbatim. */
export function makeHookEnv(
  opts: { domcaps?: string; memTotalKiB?: number; running?: RunningDomain[]; config?: string; cache?: false | string } = {},
): HookEnv {
  const root = mkdtempSync(join(tmpdir(), 'sev-xform-hook-test-'));
  const stateDir = join(root, 'state');
  const runDir = join(root, 'run');
  const config = join(root, 'hook.conf');
  mkdirSync(stateDir);
  mkdirSync(runDir);
  const cache = join(stateDir, 'host.json');
  const firmwareDirs = [join(FIX, 'firmware')];
  const content: HostCache = {
    version: 1,
    written: '2025-01-01T00:00:00.000Z',
    domcaps: opts.domcaps ?? domcaps(),
    firmware: loadFirmwareDescriptors(firmwareDirs),
    firmwareDirs,
    memTotalKiB: opts.memTotalKiB ?? 64 * GiB,
  };
  if (opts.cache !== false) writeFileSync(cache, typeof opts.cache === 'string' ? opts.cache : serializeHostCache(content));
  if (opts.config !== undefined) writeFileSync(config, opts.config);
  (opts.running ?? []).forEach((d, i) => writeFileSync(join(runDir, `${d.name}.xml`), liveStatus(d, i + 1)));
  return {
    root,
    stateDir,
    cache,
    runDir,
    config,
    lockDir: join(root, 'lock'),
    env: { HOME: '/nonexistent', SEV_XFORM_STATE_DIR: stateDir, SEV_XFORM_RUN_DIR: runDir, SEV_XFORM_HOOK_CONF: config, SEV_XFORM_LOCK_DIR: join(root, 'lock') },
  };
}

export function removeHookEnv(e: HookEnv): void {
  rmSync(e.root, { recursive: true, force: true });
}

/**
 * makeHookEnv for a test file: each env made during a test is removed after it
 * (`suite` is the file's uvu `test`).
 */
export function hookEnvsFor(suite: { after: { each(fn: () => void): void } }): (opts?: Parameters<typeof makeHookEnv>[0]) => HookEnv {
  const envs: HookEnv[] = [];
  suite.after.each(() => {
    while (envs.length) removeHookEnv(envs.pop()!);
  });
  return (opts = {}) => {
    const e = makeHookEnv(opts);
    envs.push(e);
    return e;
  };
}

/** A domain under another name and uuid. */
export function renamed(xml: string, name: string, uuid: string): RunningDomain {
  return {
    xml: xml.replace(/<name>[^<]*<\/name>/, `<name>${name}</name>`).replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuid}</uuid>`),
    name,
    uuid,
  };
}

export function uuidN(n: number): string {
  return `0b7a3c1e-2222-4c2a-9e55-${n.toString().padStart(12, '0')}`;
}

/** What libvirt keeps in /run/libvirt/qemu/NAME.xml for a running domain: the live definition inside <domstatus>. */
export function liveStatus(d: RunningDomain, id: number): string {
  const domain = d.xml.replace(/^<domain type='kvm'>/, `<domain type='kvm' id='${id}'>`).replace(/\n$/, '').replace(/\n/g, '\n  ');
  return `<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n<domstatus state='running' reason='booted' pid='${1000 + id}'>\n  <monitor path='/var/lib/libvirt/qemu/domain-${id}-${d.name}/monitor.sock' type='unix'/>\n  ${domain}\n</domstatus>\n`;
}
