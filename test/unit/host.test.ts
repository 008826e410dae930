// `sev-xform host` against the fake roots in fixtures/hostroots/: each root holds
// the files the command reads, plus commands.json (what qemu, libvirtd and virsh
// print there), which the fake `run` below answers from.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../support/run-cli.js';
import type { CommandResult, RunCommand } from '../../src/host/facts.js';
import { hostFactsFromCache, readHostCache } from '../../src/host/cache.js';
import { paramEnabled, parseVersion } from '../../src/host/detect.js';

const ROOTS = 'fixtures/hostroots';
const DOMCAPS_CMD = 'virsh domcapabilities --arch x86_64 --machine q35';

/** Answers commands from ROOT/commands.json; `overrides` replace entries (null: command not found). */
function fakeRun(root: string, overrides: Record<string, string | null> = {}): { run: RunCommand; calls: string[] } {
  const table = JSON.parse(readFileSync(join(root, 'commands.json'), 'utf8')) as Record<string, string | { file: string }>;
  const calls: string[] = [];
  const run: RunCommand = (cmd, args): CommandResult => {
    const line = [cmd, ...args].join(' ');
    calls.push(line);
    const entry = line in overrides ? overrides[line] : table[line];
    if (entry === undefined || entry === null) return { status: null, stdout: '', stderr: '', error: `spawnSync ${cmd} ENOENT` };
    const stdout = typeof entry === 'string' ? entry : readFileSync(join(root, entry.file), 'utf8');
    return { status: 0, stdout, stderr: '' };
  };
  return { run, calls };
}

interface Check {
  id: string;
  title: string;
  status: string;
  detail: string;
  fix?: string;
  blocks?: string;
}

async function hostJson(root: string, run: RunCommand, extra: string[] = []) {
  const r = await runCli(['host', '--root', root, '--json', ...extra], { run });
  const report = JSON.parse(r.stdout) as { checks: Check[]; traits: string[]; sev: boolean; sevEs: boolean } & Record<string, unknown>;
  return { ...r, report, ids: (status: string) => report.checks.filter((c) => c.status === status).map((c) => c.id) };
}

const expected: Record<string, { code: number; traits: string[]; missing: string[]; warn: string[] }> = {
  'sev-host': {
    code: 0,
    traits: ['HW_CPU_X86_AMD_SEV'],
    missing: [],
    warn: ['kvm-amd-sev-es', 'firmware-amd-sev-es', 'domcaps-max-es-guests'],
  },
  'sev-es-host': { code: 0, traits: ['HW_CPU_X86_AMD_SEV', 'HW_CPU_X86_AMD_SEV_ES'], missing: [], warn: [] },
  // SEV-SNP on: AMD firmware then turns SEV-ES off (CVE-2025-48514), so SEV-ES is withheld.
  'snp-host': { code: 0, traits: ['HW_CPU_X86_AMD_SEV', 'HW_CPU_X86_AMD_SEV_SNP'], missing: [], warn: ['sev-es-on-snp-host'] },
  'broken-host': {
    code: 1,
    traits: [],
    missing: ['kvm-amd-sev', 'dev-sev', 'domcaps-sev'],
    warn: ['kvm-amd-sev-es', 'qemu', 'firmware-amd-sev-es'],
  },
  'intel-host': {
    code: 1,
    traits: [],
    missing: ['cpu-vendor', 'cpu-flag-sev', 'kvm-amd-sev', 'dev-sev', 'domcaps-sev'],
    warn: ['cpu-flag-sev-es', 'kvm-amd-sev-es', 'firmware-amd-sev-es'],
  },
};

for (const [name, want] of Object.entries(expected)) {
  test(`${name}: verdict, traits and the missing and warn checks`, async () => {
    const root = join(ROOTS, name);
    const { code, stderr, report, ids } = await hostJson(root, fakeRun(root).run);
    assert.is(code, want.code, stderr);
    assert.is(stderr, '');
    assert.equal(report.traits, want.traits);
    assert.is(report.sev, want.code === 0);
    assert.is(report.sevEs, want.traits.includes('HW_CPU_X86_AMD_SEV_ES'));
    assert.equal(ids('missing'), want.missing);
    assert.equal(ids('warn'), want.warn);
    for (const c of report.checks) if (c.status === 'missing' || c.status === 'warn') assert.ok(c.fix, `${c.id} has no fix`);
  });

  test(`${name}: human report is one line per check, then traits and verdict`, async () => {
    const root = join(ROOTS, name);
    const human = await runCli(['host', '--root', root], { run: fakeRun(root).run });
    const { report } = await hostJson(root, fakeRun(root).run);
    assert.is(human.code, want.code);
    const lines = human.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^root {5}\//);
    assert.is(lines.length, report.checks.length + 3);
    report.checks.forEach((c, i) => assert.ok(lines[i + 1]!.startsWith(`${c.status.padEnd(9)}${c.title}: ${c.detail}`), lines[i + 1]));
    assert.is(lines.at(-2), `traits   ${want.traits.length ? want.traits.join(' ') : 'none'}`);
    assert.match(lines.at(-1)!, want.code === 0 ? /^verdict {2}SEV .*can run here/ : /^verdict {2}SEV guests cannot run here/);
  });
}

test('broken-host: the missing lines name the value read and the fix', async () => {
  const root = join(ROOTS, 'broken-host');
  const { stdout } = await runCli(['host', '--root', root], { run: fakeRun(root).run });
  assert.match(stdout, /^missing  kvm_amd sev parameter: 0; fix: add `kvm_amd\.sev=1 mem_encrypt=on` to the kernel command line/m);
  assert.match(stdout, /^missing  \/dev\/sev: not present; fix: /m);
  assert.match(stdout, /^missing  libvirt domcapabilities SEV: <sev supported='no'>/m);
  assert.match(stdout, /^warn     QEMU: 5\.2\.0: enough for SEV, SEV-ES needs 6\.0/m);
  assert.match(stdout, /^verdict  SEV guests cannot run here \(3 missing\)$/m);
});

test('sev-host: SEV slots and firmware are reported, SEV-ES is withheld for each reason', async () => {
  const root = join(ROOTS, 'sev-host');
  const { report } = await hostJson(root, fakeRun(root).run);
  const byId = new Map(report.checks.map((c) => [c.id, c]));
  assert.is(byId.get('domcaps-sev')!.detail, 'supported, cbitpos 47, reducedPhysBits 1');
  assert.is(byId.get('domcaps-max-guests')!.detail, '15');
  assert.is(byId.get('kvm-amd-sev')!.detail, 'Y');
  assert.is(byId.get('kvm-amd-sev-es')!.detail, 'N');
  assert.is(byId.get('firmware-amd-sev')!.detail.split(', ').at(-1), '/usr/share/qemu/firmware/60-edk2-x86_64.json');
  assert.is(byId.get('kvm-amd-sev-snp')!.status, 'info');
  for (const id of ['kvm-amd-sev-es', 'firmware-amd-sev-es', 'domcaps-max-es-guests']) assert.is(byId.get(id)!.blocks, 'sev-es');
});

test('snp-host: every SEV-SNP check passes and the trait is reported; sev-es-host: each SEV-SNP lack is info, not a warning', async () => {
  const snp = join(ROOTS, 'snp-host');
  const { report } = await hostJson(snp, fakeRun(snp).run);
  const byId = new Map(report.checks.map((c) => [c.id, c]));
  for (const id of ['cpu-flag-sev-snp', 'kvm-amd-sev-snp', 'snp-versions', 'firmware-amd-sev-snp', 'domcaps-sev-snp']) assert.is(byId.get(id)?.status, 'ok', id);
  assert.is(report['sevSnp'], true);
  assert.is(report.sevEs, false);
  assert.match(byId.get('sev-es-on-snp-host')!.detail, /CVE-2025-48514/);

  const es = join(ROOTS, 'sev-es-host');
  const r = await hostJson(es, fakeRun(es).run);
  const esById = new Map(r.report.checks.map((c) => [c.id, c]));
  assert.is(r.report['sevSnp'], false);
  for (const id of ['cpu-flag-sev-snp', 'kvm-amd-sev-snp', 'snp-versions', 'firmware-amd-sev-snp', 'domcaps-sev-snp']) {
    assert.is(esById.get(id)?.status, 'info', id);
    assert.is(esById.get(id)?.blocks, 'sev-snp', id);
    assert.ok(esById.get(id)?.fix, id);
  }
  assert.match(esById.get('snp-versions')!.detail, /QEMU 7\.2\.15 < 9\.1, libvirt 9\.0\.0 < 10\.5/);
  assert.match(esById.get('domcaps-sev-snp')!.detail, /no <launchSecurity> element/);
});

test('--json shape', async () => {
  const root = join(ROOTS, 'sev-es-host');
  const { report, stdout } = await hostJson(root, fakeRun(root).run);
  assert.ok(stdout.endsWith('}\n'));
  assert.equal(Object.keys(report).sort(), [
    'cacheFile',
    'checks',
    'domcaps',
    'firmware',
    'firmwareDirs',
    'memTotalKiB',
    'root',
    'sev',
    'sevEs',
    'sevSnp',
    'traits',
    'versions',
  ]);
  assert.equal(report['versions'], { kernel: '6.12.12+bpo-amd64', qemu: '7.2.15', libvirt: '9.0.0' });
  assert.equal(report['domcaps'], {
    source: DOMCAPS_CMD,
    sev: { supported: true, cbitpos: 51, reducedPhysBits: 1, maxGuests: 494, maxESGuests: 15 },
    launchSecurityTypes: null,
    error: null,
  });
  assert.is(report['memTotalKiB'], 527958016);
  assert.is(report['cacheFile'], null);
  for (const c of report.checks) {
    assert.type(c.id, 'string');
    assert.type(c.title, 'string');
    assert.type(c.detail, 'string');
    assert.ok(['ok', 'warn', 'missing', 'info'].includes(c.status), c.status);
  }
  const fw = report['firmware'] as Array<{ file: string; features: string[] }>;
  // /etc/qemu/firmware overrides the same file name in /usr/share/qemu/firmware.
  assert.ok(fw.some((d) => d.file.endsWith('/etc/qemu/firmware/60-edk2-x86_64.json') && d.features.includes('amd-sev-es')));
  assert.not.ok(fw.some((d) => d.file.endsWith('/usr/share/qemu/firmware/60-edk2-x86_64.json')));
});

test('virsh failing: domcapabilities is missing with the reason, no crash', async () => {
  const root = join(ROOTS, 'sev-es-host');
  for (const answer of [null, 'error: failed to connect to the hypervisor']) {
    const run: RunCommand =
      answer === null
        ? fakeRun(root, { [DOMCAPS_CMD]: null }).run
        : (cmd, args) => ([cmd, ...args].join(' ') === DOMCAPS_CMD ? { status: 1, stdout: '', stderr: answer + '\n' } : fakeRun(root).run(cmd, args));
    const { code, stderr, report, ids } = await hostJson(root, run);
    assert.is(code, 1);
    assert.is(stderr, '');
    assert.equal(ids('missing'), ['domcaps-sev']);
    assert.equal(report.traits, []);
    const c = report.checks.find((x) => x.id === 'domcaps-sev')!;
    assert.match(c.detail, answer === null ? /^unknown: `virsh domcapabilities --arch x86_64 --machine q35` failed \(spawnSync virsh ENOENT\)$/ : /failed to connect to the hypervisor/);
    assert.match(c.fix!, /start libvirtd/);
  }
});

test('virsh printing something that is not domcapabilities is reported, not thrown', async () => {
  const root = join(ROOTS, 'sev-es-host');
  const { code, report } = await hostJson(root, fakeRun(root, { [DOMCAPS_CMD]: '<domainCapabilities><features>' }).run);
  assert.is(code, 1);
  assert.match(report.checks.find((c) => c.id === 'domcaps-sev')!.detail, /^unknown: virsh domcapabilities .*: not well-formed XML/);
});

test('--domcaps FILE is read instead of running virsh', async () => {
  const root = join(ROOTS, 'sev-es-host');
  const fake = fakeRun(root, { [DOMCAPS_CMD]: null });
  const { code, report } = await hostJson(root, fake.run, ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml']);
  assert.is(code, 0);
  assert.equal(report.traits, ['HW_CPU_X86_AMD_SEV']);
  assert.not.ok(fake.calls.includes(DOMCAPS_CMD));
});

test('old kernel, QEMU and libvirt are missing; a numeric kvm_amd parameter counts', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'sev-xform-host-'));
  try {
    cpSync(join(ROOTS, 'sev-host'), tmp, { recursive: true });
    writeFileSync(join(tmp, 'proc/sys/kernel/osrelease'), '4.15.0-20-generic\n');
    writeFileSync(join(tmp, 'sys/module/kvm_amd/parameters/sev'), '1\n');
    const run = fakeRun(tmp, {
      'qemu-system-x86_64 --version': 'QEMU emulator version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7)\n',
      'libvirtd --version': 'libvirtd (libvirt) 4.0.0\n',
    }).run;
    const { code, report, ids } = await hostJson(tmp, run);
    assert.is(code, 1);
    assert.equal(ids('missing'), ['kernel', 'qemu', 'libvirt']);
    const detail = (id: string) => report.checks.find((c) => c.id === id)!.detail;
    assert.is(detail('kernel'), '4.15.0-20-generic, older than 4.16');
    assert.is(detail('qemu'), '2.11.1, older than 2.12');
    assert.is(detail('libvirt'), '4.0.0 (from libvirtd --version), older than 4.5');
    assert.is(detail('kvm-amd-sev'), '1');
    assert.ok(!ids('missing').includes('kvm-amd-sev'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('libvirt version falls back to virtqemud, then to virsh', async () => {
  const root = join(ROOTS, 'sev-host');
  const modular = await hostJson(root, fakeRun(root, { 'libvirtd --version': null, 'virtqemud --version': 'virtqemud (libvirt) 10.0.0\n' }).run);
  assert.is(modular.report.checks.find((c) => c.id === 'libvirt')!.detail, '10.0.0 (from virtqemud --version)');
  const none = await hostJson(root, fakeRun(root, { 'libvirtd --version': null }).run);
  const c = none.report.checks.find((x) => x.id === 'libvirt')!;
  assert.is(c.status, 'missing');
  assert.match(c.detail, /^unknown: `libvirtd --version` failed .*; `virtqemud --version` failed .*; `virsh --version` failed/);
});

test('version and parameter parsing', () => {
  assert.equal(parseVersion('6.12.12+bpo-amd64'), [6, 12, 12]);
  assert.equal(parseVersion('QEMU emulator version 7.2.15 (Debian)'), [7, 2, 15]);
  assert.equal(parseVersion('4.16'), [4, 16, 0]);
  assert.is(parseVersion('none'), undefined);
  for (const on of ['1\n', 'Y\n', 'y']) assert.ok(paramEnabled(on), on);
  for (const off of ['0\n', 'N\n', '', '10']) assert.not.ok(paramEnabled(off), off);
});

test('--write-cache writes a cache that readHostCache parses back', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'sev-xform-state-'));
  try {
    const root = join(ROOTS, 'sev-es-host');
    const stateDir = join(tmp, 'var/lib/sev-xform');
    for (let round = 0; round < 2; round++) {
      const r = await runCli(['host', '--root', root, '--write-cache', '--state-dir', stateDir], { run: fakeRun(root).run });
      assert.is(r.code, 0, r.stderr);
      assert.is(r.stderr, `sev-xform: host cache written to ${join(stateDir, 'host.json')}\n`);
    }
    const file = join(stateDir, 'host.json');
    assert.equal(readdirSync(stateDir), ['host.json'], 'no temporary file left behind');
    assert.is(statSync(file).mode & 0o777, 0o644);
    const cache = readHostCache(file);
    assert.is(cache.domcaps, readFileSync(join(root, 'domcaps.xml'), 'utf8'));
    assert.is(cache.memTotalKiB, 527958016);
    assert.equal(cache.firmwareDirs, ['/usr/share/qemu/firmware', '/etc/qemu/firmware', '/nonexistent/.config/qemu/firmware']);
    assert.equal(
      cache.firmware.map((d) => d.file),
      ['/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json', '/usr/share/qemu/firmware/50-edk2-x86_64-secure.json', '/etc/qemu/firmware/60-edk2-x86_64.json'],
    );
    assert.ok(!Number.isNaN(Date.parse(cache.written)));
    const facts = hostFactsFromCache(cache, file);
    assert.equal(facts.caps().sev, { supported: true, cbitpos: 51, reducedPhysBits: 1, maxGuests: 494, maxESGuests: 15 });
    assert.ok(facts.firmware().some((d) => d.features.includes('amd-sev-es')));

    const json = await hostJson(root, fakeRun(root).run, ['--write-cache', '--state-dir', stateDir]);
    assert.is(json.report['cacheFile'], file);
    assert.is(json.stderr, '');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('--write-cache on a host without SEV still records it, and exits 1', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'sev-xform-state-'));
  try {
    const root = join(ROOTS, 'intel-host');
    const r = await runCli(['host', '--root', root, '--write-cache', '--state-dir', tmp], { run: fakeRun(root).run });
    assert.is(r.code, 1);
    assert.is(readHostCache(join(tmp, 'host.json')).memTotalKiB, 263842304);
    assert.is(hostFactsFromCache(readHostCache(join(tmp, 'host.json')), 'x').caps().sev.supported, false);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('--write-cache without domcapabilities fails in one line and writes nothing', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'sev-xform-state-'));
  try {
    const root = join(ROOTS, 'sev-es-host');
    const stateDir = join(tmp, 'state');
    const r = await runCli(['host', '--root', root, '--write-cache', '--state-dir', stateDir], { run: fakeRun(root, { [DOMCAPS_CMD]: null }).run });
    assert.is(r.code, 1);
    assert.match(r.stdout, /^verdict /m);
    assert.is(r.stderr.trimEnd().split('\n').length, 1);
    assert.match(r.stderr, /^sev-xform: host: cannot write the host cache: domcapabilities unknown \(`virsh domcapabilities/);
    assert.not.ok(existsSync(stateDir));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('usage errors exit 2', async () => {
  const root = join(ROOTS, 'sev-host');
  const run = fakeRun(root).run;
  const noState = await runCli(['host', '--root', root, '--write-cache'], { run });
  assert.is(noState.code, 2);
  assert.match(noState.stderr, /--write-cache with --root needs --state-dir/);
  const badRoot = await runCli(['host', '--root', join(root, 'no-such-dir')], { run });
  assert.is(badRoot.code, 2);
  assert.match(badRoot.stderr, /--root .*no-such-dir: not a directory/);
  const stateOnly = await runCli(['host', '--root', root, '--state-dir', '/tmp/x'], { run });
  assert.is(stateOnly.code, 2);
  assert.match(stateOnly.stderr, /--state-dir is only used with --write-cache/);
  for (const r of [noState, badRoot, stateOnly]) assert.is(r.stdout, '');
});

test.run();
