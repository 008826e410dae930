// `sev-xform plan`: memory and SEV slots for a set of SEV guests, with the
// accounting of the filter's hard_limit and of the hook's admission check.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, type CliRun } from '../support/run-cli.js';
import { mib, parseSize, type Plan } from '../../src/plan.js';
import { DEFAULT_QEMU_OVERHEAD_KIB, ROM_ACPI_KIB } from '../../src/domain/memory.js';
import { DEFAULT_RESERVE_MIB } from '../../src/hook/config.js';
import { FailureError } from '../../src/failure.js';
import { GiB, HOST_ARGS, convert, domcaps, fixture, makeHookEnv, removeHookEnv, type HookEnv } from '../fixtures-hook/env.js';

const MiB = 1024;
const RESERVE = DEFAULT_RESERVE_MIB * MiB;
/** What QEMU pins beside RAM (16 MiB) and QEMU's own process by default (256 MiB). */
const ROM = 16 * MiB;
const QEMU = 256 * MiB;
const tagged = fixture('tagged.xml'); // 2 GiB, no video
const taggedEs = fixture('tagged-es.xml');
const plain = fixture('plain.xml');

const temps: string[] = [];
const envs: HookEnv[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sev-xform-plan-test-'));
  temps.push(d);
  return d;
}
function hostEnv(opts: Parameters<typeof makeHookEnv>[0] = {}): HookEnv {
  const e = makeHookEnv(opts);
  envs.push(e);
  return e;
}
test.after.each(() => {
  while (temps.length) rmSync(temps.pop()!, { recursive: true, force: true });
  while (envs.length) removeHookEnv(envs.pop()!);
});

/** Runs plan with a fixed environment: no hook.conf, no host cache, unless the test says so. */
function plan(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const none = tempDir();
  return runCli(['plan', ...args], {
    env: { HOME: '/nonexistent', SEV_XFORM_HOOK_CONF: join(none, 'hook.conf'), SEV_XFORM_STATE_DIR: join(none, 'state'), ...env },
  });
}

function json(r: CliRun): Plan {
  return JSON.parse(r.stdout) as Plan;
}

function writeDomains(files: Record<string, string>): string {
  const dir = tempDir();
  for (const [name, xml] of Object.entries(files)) writeFileSync(join(dir, name), xml);
  return dir;
}

function caps(maxGuests: number, maxESGuests: number): string {
  const dir = tempDir();
  const file = join(dir, 'caps.xml');
  writeFileSync(file, domcaps(maxGuests, maxESGuests));
  return file;
}

/** The same domain with its tag replaced (or removed with ''). */
function withTag(xml: string, tag: string): string {
  const out = xml.replace(/<sev:sev xmlns:sev="urn:sev-xform:domain:1"[^>]*\/>/, tag);
  if (out === xml) throw new Error('withTag(): no tag to replace');
  return out;
}

// ---- sizes

test("sizes follow libvirt's unit rules and come out in KiB, rounded up", () => {
  assert.is(parseSize('4GiB', '--memory'), 4 * GiB);
  assert.is(parseSize('4G', '--memory'), 4 * GiB, "libvirt's G is GiB");
  assert.is(parseSize('4gib', '--memory'), 4 * GiB, 'case-insensitive');
  assert.is(parseSize('512MiB', '--memory'), 512 * MiB);
  assert.is(parseSize('1GB', '--memory'), Math.ceil(1e9 / 1024), 'GB is 10^9 bytes');
  assert.is(parseSize('2048', '--memory'), 2048, 'no unit means KiB');
  assert.is(parseSize('1b', '--memory'), 1, 'a byte rounds up to a KiB');
  assert.is(parseSize('1 TiB', '--memory'), 1024 * GiB);
  for (const bad of ['4.5GiB', '-1G', 'G', '4 GiBs', '4Q', '']) {
    try {
      parseSize(bad, '--memory');
      assert.unreachable(`'${bad}' was accepted`);
    } catch (e: unknown) {
      assert.ok(e instanceof FailureError && e.failure.kind === 'usage', `'${bad}' is a usage error`);
    }
  }
});

test('MiB in messages: to a tenth, never rounded in the plan\'s favour', () => {
  assert.is(mib(4096 * 1024), '4096 MiB');
  assert.is(mib(1025), '1.1 MiB');
  assert.is(mib(1025, 'down'), '1 MiB');
  assert.is(mib(1024 * 3 + 1000, 'down'), '3.9 MiB');
});

// ---- --guests

test('--guests: each pins RAM + video + 16 MiB and may use 256 MiB + RAM/256 more for QEMU, plus the host reserve; fits, exit 0', async () => {
  const r = await plan(['--guests', '8', '--memory', '4GiB', '--video', '16MiB', '--mem-total', '64GiB', '--json']);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stderr, '');
  const p = json(r);
  assert.is(ROM_ACPI_KIB, ROM);
  assert.is(DEFAULT_QEMU_OVERHEAD_KIB, QEMU);
  const pinned = 4 * GiB + 16 * MiB + ROM;
  // QEMU's and KVM's page tables: 1/256 of RAM, 16 MiB for 4 GiB.
  const overhead = QEMU + 16 * MiB;
  assert.equal(p.guests, [
    {
      name: 'guest', source: '--guests', count: 8, es: false, ramKiB: 4 * GiB, videoKiB: 16 * MiB, romKiB: ROM,
      pinnedKiB: pinned, fixedOverheadKiB: QEMU, pageTablesKiB: 16 * MiB, overheadKiB: overhead, ceilingKiB: pinned + overhead, hardLimitKiB: null, countedKiB: pinned + overhead,
    },
  ]);
  assert.is(p.memory.pinnedKiB, 8 * pinned);
  assert.is(p.memory.guestsKiB, 8 * (pinned + overhead));
  assert.is(p.memory.hostReserveKiB, RESERVE);
  assert.is(p.memory.neededKiB, 8 * (pinned + overhead) + RESERVE);
  assert.is(p.memory.spareKiB, 64 * GiB - p.memory.neededKiB);
  assert.is(p.fits, true);
  assert.equal(p.problems, []);
});

test('text report: one line per guest group, memory, slots and a verdict', async () => {
  const r = await plan(['--guests', '8', '--memory', '4GiB', '--mem-total', '64GiB', '--domcaps', caps(15, 0)]);
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.is(lines[0], 'guests   8 x SEV (--guests): 4096 MiB RAM + 0 MiB video + 16 MiB ROM/ACPI = 4112 MiB pinned + 256 MiB QEMU process + 16 MiB page tables (RAM/256) = 4384 MiB ceiling each, 35072 MiB in all');
  assert.match(lines[1]!, /^memory   35072 MiB for 8 guest\(s\) \(32896 MiB of it pinned\) \+ 2048 MiB host reserve \(the hook's default; .*hook\.conf absent\) = 37120 MiB of MemTotal 65536 MiB \(--mem-total\): fits, 28416 MiB spare$/);
  assert.match(lines[2]!, /^slots    SEV: 8 needed, 15 available \(<maxGuests> in .*caps\.xml\): fits$/);
  assert.match(lines[3]!, /^slots    SEV-ES: 0 needed, 0 available/);
  assert.is(lines[4], 'verdict  fits');
});

test('exactly MemTotal fits; one KiB more does not (the hook refuses above MemTotal minus the reserve)', async () => {
  const need = 2 * (1 * GiB + ROM + QEMU + 4 * MiB) + RESERVE;
  const fits = await plan(['--guests', '2', '--memory', '1GiB', '--mem-total', `${need}KiB`]);
  assert.is(fits.code, 0, fits.stderr);
  const over = await plan(['--guests', '2', '--memory', '1GiB', '--mem-total', `${need - 1}KiB`]);
  assert.is(over.code, 1);
  assert.match(over.stdout, /does not fit, 0\.1 MiB short/);
  assert.match(over.stderr, /^sev-xform: plan: does not fit: memory: 2600 MiB for the SEV guests \+ 2048 MiB host reserve = 4648 MiB, 0\.1 MiB more than MemTotal 4647\.9 MiB \(--mem-total\)\n$/);
});

test('--policy with the ES bit puts the --guests guests on the SEV-ES slots', async () => {
  const r = await plan(['--guests', '3', '--memory', '1GiB', '--policy', '0x0037', '--mem-total', '64GiB', '--domcaps', caps(15, 2), '--json']);
  assert.is(r.code, 1);
  const p = json(r);
  assert.equal(p.slots.sev, { needed: 0, available: 15, fits: true });
  assert.equal(p.slots.sevEs, { needed: 3, available: 2, fits: false });
  assert.is(p.problems.length, 1);
  assert.match(r.stderr, /^sev-xform: plan: does not fit: slots: 3 SEV-ES guest\(s\) need 3 slot\(s\), the host has 2 \(<maxESGuests> in .*caps\.xml\)\n$/);
  const ok = await plan(['--guests', '2', '--memory', '1GiB', '--policy', '0x0037', '--mem-total', '64GiB', '--domcaps', caps(15, 2)]);
  assert.is(ok.code, 0, ok.stderr);
});

test('more SEV guests than maxGuests, and a host with 0 slots, do not fit', async () => {
  const r = await plan(['--guests', '16', '--memory', '1GiB', '--mem-total', '1TiB', '--domcaps', caps(15, 0)]);
  assert.is(r.code, 1);
  assert.match(r.stdout, /slots    SEV: 16 needed, 15 available .*: does not fit\nslots    SEV-ES: .*\nverdict  does not fit \(slots\)\n$/);
  const zero = await plan(['--guests', '1', '--memory', '1GiB', '--mem-total', '1TiB', '--domcaps', caps(0, 0)]);
  assert.is(zero.code, 1);
  assert.match(zero.stderr, /the host has 0 \(<maxGuests> in .*\): none can start \(leave SEV ASIDs/);
  const zeroEs = await plan(['--guests', '1', '--memory', '1GiB', '--policy', '0x0037', '--mem-total', '1TiB', '--domcaps', caps(15, 0)]);
  assert.is(zeroEs.code, 1);
  assert.match(zeroEs.stderr, /the host has 0 \(<maxESGuests> in .*\): none can start \(raise the SEV-ES ASID Space Limit/);
});

test("a host whose domcapabilities say <sev supported='no'> cannot take any SEV guest", async () => {
  const r = await plan(['--guests', '1', '--memory', '1GiB', '--mem-total', '64GiB', '--domcaps', 'test/fixtures-hook/domcaps-no-sev.xml']);
  assert.is(r.code, 1);
  assert.match(r.stdout, /slots    the host cannot run SEV guests/);
  assert.match(r.stderr, /does not fit: slots: the host cannot run SEV guests \(<sev supported='no'> in test\/fixtures-hook\/domcaps-no-sev\.xml\)/);
});

test('memory and slots failing together are both named, one stderr line each', async () => {
  const r = await plan(['--guests', '20', '--memory', '4GiB', '--mem-total', '16GiB', '--domcaps', caps(15, 0)]);
  assert.is(r.code, 1);
  assert.is(r.stderr.trimEnd().split('\n').length, 2, r.stderr);
  assert.match(r.stdout, /verdict  does not fit \(memory, slots\)\n$/);
});

// ---- where host facts come from

test('MemTotal comes from /proc/meminfo without --mem-total', async () => {
  const r = await plan(['--guests', '1', '--memory', '1MiB', '--json']);
  const p = json(r);
  assert.is(p.memory.memTotalSource, '/proc/meminfo');
  assert.ok(p.memory.memTotalKiB > 0);
});

test("the reserve defaults to the hook's: reserve_mib in hook.conf, else its default; --host-reserve overrides", async () => {
  const dir = tempDir();
  const conf = join(dir, 'hook.conf');
  const base = ['--guests', '1', '--memory', '1GiB', '--mem-total', '64GiB', '--json'];
  const absent = json(await plan(base, { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(absent.memory.hostReserveKiB, RESERVE);
  writeFileSync(conf, '# no settings\n');
  const unset = json(await plan(base, { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(unset.memory.hostReserveKiB, RESERVE);
  assert.match(unset.memory.hostReserveSource, /not set in/);
  writeFileSync(conf, 'reserve_mib = 4096\n');
  const set = json(await plan(base, { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(set.memory.hostReserveKiB, 4096 * MiB);
  assert.is(set.memory.hostReserveSource, `reserve_mib in ${conf}`);
  const option = json(await plan([...base, '--host-reserve', '1GiB'], { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(option.memory.hostReserveKiB, 1 * GiB);
  writeFileSync(conf, 'reserve = 1\n');
  const broken = await plan(base, { SEV_XFORM_HOOK_CONF: conf });
  assert.is(broken.code, 1);
  assert.match(broken.stderr, /hook\.conf line 1: unknown key 'reserve'/);
});

test("QEMU's overhead defaults to the hook's: qemu_overhead_mib in hook.conf, else 256 MiB; --qemu-overhead overrides and needs a unit", async () => {
  const dir = tempDir();
  const conf = join(dir, 'hook.conf');
  const base = ['--guests', '2', '--memory', '1GiB', '--mem-total', '64GiB', '--json'];
  const absent = json(await plan(base, { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(absent.guests[0]!.fixedOverheadKiB, QEMU);
  assert.is(absent.guests[0]!.overheadKiB, QEMU + 4 * MiB, 'plus the page tables of 1 GiB');
  writeFileSync(conf, 'qemu_overhead_mib = 512\n');
  const set = json(await plan(base, { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(set.guests[0]!.fixedOverheadKiB, 512 * MiB);
  assert.is(set.memory.guestsKiB, 2 * (1 * GiB + ROM + 512 * MiB + 4 * MiB));
  assert.is(set.memory.pinnedKiB, 2 * (1 * GiB + ROM), 'the overhead is not pinned');
  const option = json(await plan([...base, '--qemu-overhead', '1GiB'], { SEV_XFORM_HOOK_CONF: conf }));
  assert.is(option.guests[0]!.ceilingKiB, 1 * GiB + ROM + 1 * GiB + 4 * MiB);
  const dirs = writeDomains({ 'a.xml': tagged });
  const domain = json(await plan([join(dirs, 'a.xml'), '--qemu-overhead', '128MiB', '--mem-total', '64GiB', '--json']));
  assert.is(domain.guests[0]!.ceilingKiB, 2 * GiB + ROM + 128 * MiB + 8 * MiB);
  const bare = await plan([...base, '--qemu-overhead', '256']);
  assert.is(bare.code, 2);
  assert.match(bare.stderr, /--qemu-overhead '256' needs a unit, e.g. 256MiB/);
});

test('slots come from the host cache when there is no --domcaps, and are not checked without either', async () => {
  const e = hostEnv({ domcaps: domcaps(3, 1) });
  const base = ['--guests', '4', '--memory', '1GiB', '--mem-total', '64GiB'];
  const fromCache = await plan(base, { SEV_XFORM_STATE_DIR: e.stateDir });
  assert.is(fromCache.code, 1);
  assert.ok(fromCache.stdout.includes(`slots    SEV: 4 needed, 3 available (<maxGuests> in ${e.cache}): does not fit`), fromCache.stdout);
  const explicit = await plan([...base, '--cache', e.cache]);
  assert.is(explicit.code, 1);
  const none = await plan(base);
  assert.is(none.code, 0, none.stderr);
  assert.match(none.stdout, /slots    not checked: no --domcaps, and no host cache at .*host\.json/);
  const missing = await plan([...base, '--cache', join(e.root, 'nope.json')]);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /nope\.json: cannot read the host cache/);
  const corrupt = hostEnv({ cache: '{' });
  const bad = await plan(base, { SEV_XFORM_STATE_DIR: corrupt.stateDir });
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /host cache .* is corrupt/);
});

// ---- domain files

test('domains: only tagged or launchSecurity ones count; RAM, video and QEMU as the filter pins them', async () => {
  const video = tagged.replace('<memballoon', "<video><model type='qxl' ram='65536' vram='65536' vgamem='16384'/></video>\n    <memballoon");
  const dir = writeDomains({ 'a.xml': video, 'b.xml': plain, 'c.xml': fixture('ls-only.xml'), 'notes.txt': 'not a domain' });
  const r = await plan(['--domains', dir, '--mem-total', '64GiB', '--json']);
  assert.is(r.code, 0, r.stderr);
  const p = json(r);
  assert.equal(p.guests.map((g) => [g.source, g.count, g.ramKiB, g.videoKiB, g.romKiB, g.fixedOverheadKiB, g.pageTablesKiB]), [
    [join(dir, 'a.xml'), 1, 2 * GiB, 147456, ROM, QEMU, 8 * MiB],
    [join(dir, 'c.xml'), 1, p.guests[1]!.ramKiB, 0, ROM, QEMU, Math.ceil(p.guests[1]!.ramKiB / 256)],
  ]);
  assert.equal(p.skipped.map((s) => s.source), [join(dir, 'b.xml')]);
  // The filter writes exactly this into <memtune><hard_limit>.
  const hardLimit = Number(/<hard_limit unit='KiB'>(\d+)<\/hard_limit>/.exec(convert(video))![1]);
  assert.is(p.guests[0]!.ceilingKiB, hardLimit);
  assert.is(p.guests[0]!.countedKiB, hardLimit);
  assert.is(p.guests[0]!.pinnedKiB, 2 * GiB + 147456 + ROM);
});

test('domain files given as arguments, and together with --guests', async () => {
  const dir = writeDomains({ 'a.xml': tagged });
  const r = await plan([join(dir, 'a.xml'), '--guests', '2', '--memory', '1GiB', '--mem-total', '64GiB', '--json']);
  assert.is(r.code, 0, r.stderr);
  const p = json(r);
  assert.equal(p.guests.map((g) => [g.name, g.count]), [['guest', 2], ['tagged', 1]]);
  assert.is(p.memory.pinnedKiB, 2 * (1 * GiB + ROM) + 2 * GiB + ROM);
  assert.is(p.memory.guestsKiB, 2 * (1 * GiB + ROM + QEMU + 4 * MiB) + 2 * GiB + ROM + QEMU + 8 * MiB);
  const text = await plan([join(dir, 'a.xml'), '--mem-total', '64GiB']);
  assert.ok(
    text.stdout.startsWith(`guest    tagged (${join(dir, 'a.xml')}): SEV, 2048 MiB RAM + 0 MiB video + 16 MiB ROM/ACPI = 2064 MiB pinned + 256 MiB QEMU process + 8 MiB page tables (RAM/256) = 2328 MiB ceiling\n`),
    text.stdout,
  );
});

test('SEV-ES is read the way the filter decides the policy: tag policy, then launchSecurity, then the tag model', async () => {
  const lsEs = convert(taggedEs);
  const dir = writeDomains({
    '1-model.xml': taggedEs,
    '2-tag-policy.xml': withTag(tagged, '<sev:sev xmlns:sev="urn:sev-xform:domain:1" policy="0x0037"/>'),
    '3-converted-es.xml': lsEs,
    '4-converted-es-untagged.xml': withTag(lsEs, ''),
    '5-tag-policy-beats-ls.xml': withTag(lsEs, '<sev:sev xmlns:sev="urn:sev-xform:domain:1" policy="0x0033"/>'),
    '6-plain-sev.xml': convert(tagged),
  });
  const p = json(await plan(['--domains', dir, '--mem-total', '64GiB', '--json']));
  assert.equal(p.guests.map((g) => g.es), [true, true, true, true, false, false]);
  assert.is(p.slots.sevEs.needed, 4);
  assert.is(p.slots.sev.needed, 2);
});

test('SEV-SNP guests (tag model, tag snp-policy, sev-snp launchSecurity, --guests --model sev-snp) take SEV-ES-range slots', async () => {
  const snpLs = "  <launchSecurity type='sev-snp'>\n    <policy>0x00030000</policy>\n  </launchSecurity>\n</domain>";
  const dir = writeDomains({
    '1-model.xml': withTag(tagged, '<sev:sev xmlns:sev="urn:sev-xform:domain:1" model="sev-snp" policy="0x30000"/>'),
    '2-snp-policy.xml': withTag(tagged, '<sev:sev xmlns:sev="urn:sev-xform:domain:1" snp-policy="0x30000"/>'),
    '3-ls.xml': withTag(tagged, '').replace('</domain>', snpLs),
    '4-plain-sev.xml': convert(tagged),
  });
  const r = await plan(['--domains', dir, '--mem-total', '64GiB', '--domcaps', caps(15, 2), '--json']);
  const p = json(r);
  assert.equal(p.guests.map((g) => [g.es, g.snp === true]), [[true, true], [true, true], [true, true], [false, false]]);
  assert.equal(p.slots.sevEs, { needed: 3, available: 2, fits: false });
  assert.match(r.stderr, /slots: 3 SEV-ES\/SEV-SNP guest\(s\) need 3 slot\(s\), the host has 2 \(<maxESGuests>/);
  const g = await plan(['--guests', '2', '--memory', '1GiB', '--model', 'sev-snp', '--mem-total', '64GiB', '--domcaps', caps(15, 2)]);
  assert.is(g.code, 0, g.stderr);
  assert.match(g.stdout, /guests   2 x SEV-SNP \(--guests\)/);
  assert.match(g.stdout, /slots    SEV-ES\/SEV-SNP: 2 needed, 2 available/);
  const bad = await plan(['--guests', '1', '--memory', '1GiB', '--model', 'sev-snp', '--policy', '0x10000', '--mem-total', '64GiB']);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /bit 17/);
});

test('a hard_limit above the estimate counts, as the hook counts it', async () => {
  const big = tagged.replace('<vcpu', "<memtune>\n    <hard_limit unit='GiB'>6</hard_limit>\n  </memtune>\n  <vcpu");
  const small = tagged.replace('<vcpu', "<memtune>\n    <hard_limit unit='GiB'>1</hard_limit>\n  </memtune>\n  <vcpu");
  const dir = writeDomains({ 'big.xml': big, 'small.xml': small });
  const r = await plan(['--domains', dir, '--mem-total', '64GiB', '--json']);
  const [b, s] = json(r).guests;
  assert.is(b!.countedKiB, 6 * GiB);
  assert.is(b!.hardLimitKiB, 6 * GiB);
  assert.is(s!.countedKiB, 2 * GiB + ROM + QEMU + 8 * MiB, 'a hard_limit below the ceiling is raised by the filter');
  assert.is(s!.hardLimitKiB, null);
  const text = await plan([join(dir, 'big.xml'), '--mem-total', '64GiB']);
  assert.match(text.stdout, /; its hard_limit 6144 MiB is larger and counts/);
});

test('a broken domain file is bad input naming the file; an unreadable folder names the folder', async () => {
  const dir = writeDomains({ 'x.xml': '<domain' });
  const r = await plan(['--domains', dir, '--mem-total', '64GiB']);
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes(join(dir, 'x.xml')), r.stderr);
  assert.is(r.stdout, '');
  const badMem = writeDomains({ 'm.xml': tagged.replace("<memory unit='GiB'>2</memory>", "<memory unit='parsecs'>2</memory>") });
  const m = await plan(['--domains', badMem, '--mem-total', '64GiB']);
  assert.is(m.code, 1);
  assert.match(m.stderr, /^sev-xform: refused: .*m\.xml: domain\/memory: unknown unit 'parsecs'\n$/);
  const gone = await plan(['--domains', join(dir, 'missing'), '--mem-total', '64GiB']);
  assert.is(gone.code, 1);
  assert.match(gone.stderr, /missing: cannot list the domain folder \(ENOENT\)/);
});

// ---- the hook admits what plan says fits

test('plan and the hook agree at the memory boundary', async () => {
  const guest = convert(tagged);
  const dir = writeDomains({ 'g.xml': guest });
  const pinned = json(await plan([join(dir, 'g.xml'), '--mem-total', '64GiB', '--json'])).guests[0]!.countedKiB;
  for (const memTotalKiB of [pinned + RESERVE, pinned + RESERVE - 1]) {
    const e = hostEnv({ memTotalKiB });
    const planned = await plan([join(dir, 'g.xml'), '--mem-total', `${memTotalKiB}KiB`, ...HOST_ARGS.slice(0, 2)], { SEV_XFORM_HOOK_CONF: e.config });
    const hooked = await runCli(['hook', 'tagged', 'prepare', 'begin', '-'], { stdin: guest, env: e.env });
    assert.is(planned.code, hooked.code, `MemTotal ${memTotalKiB} KiB: plan exit ${planned.code}, hook exit ${hooked.code} (${hooked.stderr})`);
  }
});

// ---- usage

test('usage errors exit 2 with one line', async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /nothing to plan/],
    [['--guests', '2'], /--guests needs --memory/],
    [['--memory', '4GiB'], /--memory describes the --guests guests/],
    [['--video', '16MiB', '--domains', '.'], /--video describes the --guests guests/],
    [['--guests', '0', '--memory', '1GiB'], /--guests '0' is not a whole number/],
    [['--guests', 'two', '--memory', '1GiB'], /--guests 'two'/],
    [['--guests', '1', '--memory', '1.5GiB'], /--memory '1\.5GiB' is not a size/],
    [['--guests', '1', '--memory', '1GiB', '--mem-total', 'lots'], /--mem-total 'lots'/],
    [['--guests', '1', '--memory', '1GiB', '--bogus'], /Unknown argument: bogus/],
  ];
  for (const [args, message] of cases) {
    const r = await plan(args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.is(r.stdout, '');
  }
  const policy = await plan(['--guests', '1', '--memory', '1GiB', '--policy', '0x10000000zz', '--mem-total', '8GiB']);
  assert.is(policy.code, 1, 'a bad policy is refused like the filter refuses it');
  assert.match(policy.stderr, /--policy: policy '0x10000000zz' is not a hexadecimal number/);
});

test.run();
