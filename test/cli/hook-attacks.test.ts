// The hook as an attacker meets it (issue 12): hostile domain names, over-limit
// and near-miss input, foreign launchSecurity, qemu:commandline, hostile files,
// and concurrent starts. Each case runs through the built binary with libvirt's
// exact call, and through the shim (hooks/qemu pointed at the binary) as libvirt
// runs it: four arguments, the domain XML on stdin, a minimal environment.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../support/bin.js';
import { HOST_ARGS, convert, fixture, liveStatus, hookEnvsFor, uuidN, type HookEnv } from '../fixtures-hook/env.js';
import { OPTION_LIKE_NAMES } from '../support/hostile-names.js';

const URN = 'urn:sev-xform:domain:1';
const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';
const tagged = fixture('tagged.xml');
const plain = fixture('plain.xml');
const converted = convert(tagged);

const work = mkdtempSync(join(tmpdir(), 'sev-xform-hook-attacks-'));
const SHIM = join(work, 'qemu');
writeFileSync(SHIM, fixtureShim(BIN));
chmodSync(SHIM, 0o755);

function fixtureShim(bin: string): string {
  return readShim().replace(/^SEV_XFORM=.*$/m, `SEV_XFORM=${bin}`);
}
function readShim(): string {
  return spawnSync('cat', ['hooks/qemu'], { encoding: 'utf8' }).stdout;
}

const hostEnv = hookEnvsFor(test);
test.after(() => rmSync(work, { recursive: true, force: true }));

interface Answer {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** libvirt's environment: LC_ALL, PATH, HOME, plus the test host's paths. */
function libvirtEnv(e: HookEnv): Record<string, string> {
  return { ...e.env, LC_ALL: 'C', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/' };
}

/** One call as libvirt makes it: through the binary (`hook` + 4 arguments) or the shim (4 arguments). */
function call(via: 'bin' | 'shim', e: HookEnv, args: readonly string[], input: string | Buffer, timeoutMs = 60_000): Answer {
  const t0 = Date.now();
  const [cmd, argv] = via === 'bin' ? [BIN, ['hook', ...args]] : [SHIM, [...args]];
  const r = spawnSync(cmd, argv, { input, encoding: 'utf8', env: libvirtEnv(e), timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

function callAsync(via: 'bin' | 'shim', e: HookEnv, args: readonly string[], input: string): Promise<Answer> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const [cmd, argv] = via === 'bin' ? [BIN, ['hook', ...args]] : [SHIM, [...args]];
    const child = spawn(cmd, argv, { env: libvirtEnv(e) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 }));
    child.stdin.end(input);
  });
}

function assertRefused(r: Answer, what: string, ...mentions: string[]): void {
  assert.is(r.code, 1, `${what}: exit code; stderr: ${r.stderr}`);
  assert.is(r.stdout, '', `${what}: nothing on stdout`);
  assert.ok(r.stderr.startsWith('sev-xform: '), `${what}: stderr: ${r.stderr}`);
  assert.is(r.stderr.split('\n').length, 2, `${what}: one stderr line: ${JSON.stringify(r.stderr)}`);
  for (const m of mentions) assert.ok(r.stderr.includes(m), `${what}: stderr mentions '${m}': ${r.stderr}`);
}

function assertPassed(r: Answer, what: string): void {
  assert.is(r.code, 0, `${what}: exit code; stderr: ${r.stderr}`);
  assert.is(r.stdout, '', `${what}: nothing on stdout`);
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A domain renamed (escaped as libvirt writes it) with a fresh uuid. */
function named(xml: string, name: string, n = 1): string {
  return xml.replace(/<name>[^<]*<\/name>/, `<name>${escapeXml(name)}</name>`).replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuidN(n)}</uuid>`);
}

function inMetadata(xml: string, content: string): string {
  return xml.includes('<metadata>') ? xml.replace('<metadata>', `<metadata>\n    ${content}`) : xml.replace(/(<\/uuid>\n)/, `$1  <metadata>\n    ${content}\n  </metadata>\n`);
}

// ---- 1. domain names are data, never options

/** Names libvirt accepts (anything without '/' or newline) that look like options, shell or nothing. */
const HOSTILE_NAMES = [
  ...OPTION_LIKE_NAMES,
  '--version',
  '--sub-operation=start',
  'hook',
  'prepare',
  'two words',
  ` it's "quoted" `,
  '$(touch /tmp/sevx-pwned)',
  '`id`',
  'back\\cslash\\n',
  'größe-名前-🙂',
  '*',
  'tab\there',
  'x'.repeat(250),
];

test('hostile names through the binary and the shim: tagged refused (one line), untagged and converted pass', () => {
  const e = hostEnv();
  for (const via of ['bin', 'shim'] as const) {
    HOSTILE_NAMES.forEach((name, i) => {
      const what = `${via} ${JSON.stringify(name)}`;
      assertRefused(call(via, e, [name, 'prepare', 'begin', '-'], named(tagged, name, i)), `${what} tagged`, 'refusing to start', 'unencrypted');
      assertPassed(call(via, e, [name, 'prepare', 'begin', '-'], named(plain, name, i)), `${what} untagged`);
      const ok = call(via, e, [name, 'prepare', 'begin', '-'], named(converted, name, i));
      assertPassed(ok, `${what} converted`);
      assert.is(ok.stderr, '', `${what} converted: no stderr`);
      for (const op of ['migrate', 'restore']) assertRefused(call(via, e, [name, op, 'begin', '-'], named(converted, name, i)), `${what} ${op}`, `refusing to ${op}`);
    });
  }
  assert.not.ok(readdirSync('/tmp').includes('sevx-pwned'), 'a name was run as a command');
});

test('a refusal names the domain whole, and a 4 KiB name costs no more than one line', () => {
  const e = hostEnv();
  const long = 'n'.repeat(4096);
  const r = call('bin', e, [long, 'prepare', 'begin', '-'], named(tagged, long));
  assertRefused(r, 'long name');
});

// ---- 9. the shim without its binary

test('the shim without its binary refuses an SEV domain naming it whole (printf, not echo)', () => {
  const e = hostEnv();
  const gone = join(work, 'qemu-gone');
  writeFileSync(gone, fixtureShim(join(work, 'no-such-binary')));
  chmodSync(gone, 0o755);
  const name = 'a\\cb\\n-%s-%n';
  const r = spawnSync(gone, [name, 'prepare', 'begin', '-'], { input: named(tagged, name), encoding: 'utf8', env: libvirtEnv(e) });
  assert.is(r.status, 1);
  assert.ok(r.stderr.includes(`refusing to start ${name}:`), r.stderr);
  assert.is(r.stderr.split('\n').length, 2, r.stderr);
  const plainRun = spawnSync(gone, [name, 'prepare', 'begin', '-'], { input: named(plain, name), encoding: 'utf8', env: libvirtEnv(e) });
  assert.is(plainRun.status, 0, plainRun.stderr);
});

// ---- 2. over-limit input

const MiB = 1024 * 1024;

/** A domain padded past 64 MiB with comments in <metadata>, then `tail` inserted after the padding. */
function overLimit(xml: string, tail: string): string {
  const pad = `<!-- ${'p'.repeat(MiB - 9)} -->\n`;
  return inMetadata(xml, pad.repeat(70) + tail);
}

test('over 64 MiB: a tag after the limit is refused, a non-SEV domain passes (binary and shim)', () => {
  const e = hostEnv();
  const hidden = overLimit(plain, `<sev:sev xmlns:sev="${URN}"/>`);
  const hiddenLs = overLimit(plain, '').replace('</devices>', "</devices>\n  <launchSecurity type='sev'><policy>0x0033</policy></launchSecurity>");
  const innocent = overLimit(plain, '');
  assert.ok(hidden.length > 70 * MiB);
  for (const via of ['bin', 'shim'] as const) {
    assertRefused(call(via, e, ['big', 'prepare', 'begin', '-'], hidden), `${via} tag after 64 MiB`, 'refusing to start big', '64 MiB');
    assertRefused(call(via, e, ['big', 'prepare', 'begin', '-'], hiddenLs), `${via} launchSecurity after 64 MiB`, 'refusing to start big');
    const r = call(via, e, ['big', 'prepare', 'begin', '-'], innocent);
    assert.is(r.code, 0, `${via} innocent over-limit: ${r.stderr}`);
  }
  // The overlap between chunks: the URN split across a 64 KiB boundary is found too.
  for (const shift of [0, 1, 7, 21, 65_530]) {
    const split = overLimit(plain, 'q'.repeat(shift) + `<sev:sev xmlns:sev="${URN}"/>`);
    assertRefused(call('bin', e, ['big', 'prepare', 'begin', '-'], split), `tag shifted by ${shift}`, 'refusing to start big');
  }
});

// ---- 3. near-miss tags

test('near-miss tags: any element in the namespace is SEV; unknown names and attributes are refused naming them', () => {
  const e = hostEnv();
  const cases: Array<[string, string, string]> = [
    ['sev-es element', `<sev:sev-es xmlns:sev="${URN}"/>`, 'sev-es'],
    ['unknown attribute', `<sev:sev xmlns:sev="${URN}" polciy="0x33"/>`, 'polciy'],
    ['prefixed attribute', `<sev:sev xmlns:sev="${URN}" sev:policy="0x33"/>`, 'sev:policy'],
    ['nested in another namespace', `<app:x xmlns:app="urn:app"><sev:sev xmlns:sev="${URN}"/></app:x>`, 'sev'],
    ['default namespace', `<sev-es xmlns="${URN}"/>`, 'sev-es'],
    ['tag with a child', `<sev:sev xmlns:sev="${URN}"><sev:policy/></sev:sev>`, 'sev:policy'],
    ['another version of the namespace', `<sev:sev xmlns:sev="urn:sev-xform:domain:2"/>`, 'urn:sev-xform:domain:2'],
    ['the namespace without its version', `<sev:sev xmlns:sev="urn:sev-xform:domain"/>`, 'urn:sev-xform:domain'],
    ['the namespace in capitals', `<sev:sev xmlns:sev="URN:SEV-XFORM:domain:1"/>`, 'URN:SEV-XFORM:domain:1'],
    ['two tags', `<sev:sev xmlns:sev="${URN}"/><s2:sev xmlns:s2="${URN}"/>`, 'sev'],
  ];
  for (const [what, tag, mention] of cases) {
    const xml = inMetadata(plain, tag);
    for (const via of ['bin', 'shim'] as const) assertRefused(call(via, e, ['near', 'prepare', 'begin', '-'], xml), `${via} ${what}`, 'refusing to start near', mention);
    // The filter and check refuse it too, naming it, instead of passing it through unconverted.
    const filter = spawnSync(BIN, [...HOST_ARGS, '-'], { input: xml, encoding: 'utf8' });
    assert.is(filter.status, 1, `filter ${what}: ${filter.stderr}`);
    assert.is(filter.stdout, '', `filter ${what}: nothing on stdout`);
    assert.ok(filter.stderr.includes(mention), `filter ${what}: ${filter.stderr}`);
    const check = spawnSync(BIN, ['check', ...HOST_ARGS, '-'], { input: xml, encoding: 'utf8' });
    assert.is(check.status, 1, `check ${what}: ${check.stdout}${check.stderr}`);
    assert.ok((check.stdout + check.stderr).includes(mention), `check ${what}: ${check.stdout}${check.stderr}`);
  }
  // The known attributes on a converted domain's tag still pass.
  const ok = converted.replace(`<sev:sev xmlns:sev="${URN}"/>`, `<sev:sev xmlns:sev="${URN}" model="sev"/>`);
  assertPassed(call('bin', e, ['ok', 'prepare', 'begin', '-'], ok), 'model=sev');
});

// ---- 4. innocent domains

test('non-ASCII element names parse; the URN in a comment, CDATA or description does not make a domain SEV', () => {
  const e = hostEnv();
  const innocent = inMetadata(plain, `<app:größe xmlns:app="urn:app" ünï="1">3</app:größe>\n    <!-- see ${URN} -->`).replace(
    '</uuid>',
    `</uuid>\n  <description>${URN} &lt;launchSecurity type='sev'&gt;</description>`,
  );
  for (const via of ['bin', 'shim'] as const) {
    const r = call(via, e, ['innocent', 'prepare', 'begin', '-'], innocent);
    assertPassed(r, `${via} non-ASCII metadata`);
    assert.is(r.stderr, '', `${via}: parsed, no note`);
  }
  const filtered = spawnSync(BIN, [...HOST_ARGS, '-'], { input: innocent, encoding: 'utf8' });
  assert.is(filtered.status, 0, filtered.stderr);
  assert.is(filtered.stdout, innocent, 'passed byte for byte');
});

test('broken XML: decided from declarations and start tags, not from comments, CDATA, PIs or text', () => {
  const e = hostEnv();
  // Unclosed <devices>: not well-formed, so the hook falls back to the text.
  const broken = (extra: string): string => inMetadata(plain, extra).replace('</devices>', '');
  const innocent = [
    `<!-- ${URN} <launchSecurity type='sev'> -->`,
    `<app:n xmlns:app="urn:app"><![CDATA[${URN} <launchSecurity>]]></app:n>`,
    `<?note ${URN} <launchSecurity ?>`,
    `<app:n xmlns:app="urn:app">${URN} xmlns:sev="${URN}"</app:n>`,
    `<app:n xmlns:app="urn:app" v="${URN}"/>`,
  ];
  for (const extra of innocent) {
    const r = call('bin', e, ['b', 'prepare', 'begin', '-'], broken(extra));
    assert.is(r.code, 0, `${extra}: ${r.stderr}`);
    assert.match(r.stderr, /note: .* not blocked/);
  }
  const sev = [`<sev:sev xmlns:sev="${URN}"/>`, `<x xmlns:sev = '${URN}'/>`, `<a/><launchSecurity type='sev'/>`, `<launchSecurity\n/>`];
  for (const extra of sev) assertRefused(call('bin', e, ['b', 'prepare', 'begin', '-'], broken(extra)), extra, 'refusing to start b');
  const foreign = call('bin', e, ['b', 'prepare', 'begin', '-'], broken(`<launchSecurity type='tdx'/>`));
  assert.is(foreign.code, 0, foreign.stderr);
});

// ---- 5. foreign launchSecurity

test("launchSecurity type='tdx' or 's390-pv' is not SEV: passes; 'sev-snp' never passes unchecked", () => {
  const e = hostEnv();
  for (const type of ['tdx', 's390-pv', 'pv', 'cca']) {
    const xml = plain.replace('</devices>', `</devices>\n  <launchSecurity type='${type}'/>`);
    for (const via of ['bin', 'shim'] as const) {
      const r = call(via, e, ['foreign', 'prepare', 'begin', '-'], xml);
      assertPassed(r, `${via} ${type}`);
      assert.is(r.stderr, '', `${via} ${type}: no stderr`);
    }
    const filtered = spawnSync(BIN, [...HOST_ARGS, '-'], { input: xml, encoding: 'utf8' });
    assert.is(filtered.stdout, xml, `filter passes ${type} untouched`);
  }
  const snp = converted.replace(/<launchSecurity type='sev'>[\s\S]*?<\/launchSecurity>/, "<launchSecurity type='sev-snp'>\n    <policy>0x00030000</policy>\n  </launchSecurity>");
  assert.ok(snp.includes('sev-snp'));
  for (const xml of [snp, snp.replace(/<metadata>[\s\S]*?<\/metadata>\n/, '')])
    for (const via of ['bin', 'shim'] as const) assertRefused(call(via, e, ['snp', 'prepare', 'begin', '-'], xml), `${via} sev-snp`, 'refusing to start snp');
  const missingType = plain.replace('</devices>', `</devices>\n  <launchSecurity><policy>0x0033</policy></launchSecurity>`);
  assertRefused(call('bin', e, ['nt', 'prepare', 'begin', '-'], missingType), 'launchSecurity without type', 'refusing to start nt');
});

// ---- 7. qemu:commandline and qemu:override

function withCommandline(xml: string, args: readonly string[]): string {
  const argsXml = args.map((a) => `    <qemu:arg value='${a}'/>\n`).join('');
  return xml.replace(/^<domain type='kvm'>/, `<domain type='kvm' xmlns:qemu='${QEMU_NS}'>`).replace('</domain>', `  <qemu:commandline>\n${argsXml}  </qemu:commandline>\n</domain>`);
}

const OVERRIDES: Array<[string[], string]> = [
  [['-machine', 'confidential-guest-support='], '-machine'],
  [['-machine=q35,confidential-guest-support='], '-machine'],
  [['--machine', 'memory-encryption='], '--machine'],
  [['-M', 'q35'], '-M'],
  [['-object', 'sev-guest,id=x'], '-object'],
  [['-global', 'virtio-pci.iommu_platform=off'], '-global'],
  [['-set', 'device.x.iommu_platform=off'], '-set'],
  [['-cpu', 'host,-sev'], '-cpu'],
  [['-bios', '/tmp/plain.fd'], '-bios'],
  [['-display', 'none', '-cpu=host'], '-cpu'],
  [['-readconfig', '/tmp/x.cfg'], '-readconfig'],
  [['-incoming', 'tcp:0:4444'], '-incoming'],
  [['-loadvm', 'snap1'], '-loadvm'],
  [['-drive', 'if=pflash,format=raw,file=/tmp/plain.fd'], '-drive'],
];

test('qemu:commandline touching -machine, -object, -global, -set, -cpu or -bios is refused naming it (hook, filter, check)', () => {
  const e = hostEnv();
  for (const [args, named_] of OVERRIDES) {
    const xml = withCommandline(converted, args);
    for (const via of ['bin', 'shim'] as const) assertRefused(call(via, e, ['qc', 'prepare', 'begin', '-'], xml), `${via} ${args.join(' ')}`, 'refusing to start qc', `'${named_}'`);
    const filter = spawnSync(BIN, [...HOST_ARGS, '-'], { input: withCommandline(tagged, args), encoding: 'utf8' });
    assert.is(filter.status, 1, `filter ${args.join(' ')}: ${filter.stderr}`);
    assert.ok(filter.stderr.includes(`'${named_}'`), filter.stderr);
    const check = spawnSync(BIN, ['check', ...HOST_ARGS, '-'], { input: xml, encoding: 'utf8' });
    assert.is(check.status, 1, `check ${args.join(' ')}: ${check.stdout}${check.stderr}`);
  }
  const override = converted
    .replace(/^<domain type='kvm'>/, `<domain type='kvm' xmlns:qemu='${QEMU_NS}'>`)
    .replace('</domain>', `  <qemu:override>\n    <qemu:device alias='net0'>\n      <qemu:frontend>\n        <qemu:property name='iommu_platform' type='bool' value='false'/>\n      </qemu:frontend>\n    </qemu:device>\n  </qemu:override>\n</domain>`);
  assertRefused(call('bin', e, ['qo', 'prepare', 'begin', '-'], override), 'qemu:override', 'qemu:override', 'iommu_platform');
  // Harmless arguments on an SEV guest, and any arguments on a non-SEV domain, pass.
  assertPassed(call('bin', e, ['qd', 'prepare', 'begin', '-'], withCommandline(converted, ['-display', 'none'])), 'harmless -display');
  assertPassed(call('bin', e, ['qp', 'prepare', 'begin', '-'], withCommandline(plain, ['-machine', 'confidential-guest-support='])), 'untagged');
});

// ---- 8. files the hook trusts

test('host.json, hook.conf and status XML that are FIFOs, /dev/zero, writable by others or not root-owned are refused naming them', () => {
  const plantings: Array<[string, (e: HookEnv) => string]> = [
    ['host.json FIFO', (e) => (rmSync(e.cache), spawnSync('mkfifo', [e.cache]), e.cache)],
    ['host.json -> /dev/zero', (e) => (rmSync(e.cache), symlinkSync('/dev/zero', e.cache), e.cache)],
    ['host.json world-writable', (e) => (chmodSync(e.cache, 0o666), e.cache)],
    ['host.json group-writable', (e) => (chmodSync(e.cache, 0o664), e.cache)],
    ['host.json not root-owned', (e) => (chownSync(e.cache, 4321, 4321), e.cache)],
    ['host.json a folder', (e) => (rmSync(e.cache), mkdirSync(e.cache), e.cache)],
    ['host.json of 5 MiB', (e) => (writeFileSync(e.cache, ' '.repeat(5 * MiB)), e.cache)],
    ['hook.conf of 1 MiB', (e) => (writeFileSync(e.config, '#'.repeat(MiB)), e.config)],
    ['hook.conf FIFO', (e) => (spawnSync('mkfifo', [e.config]), e.config)],
    ['hook.conf -> /dev/zero', (e) => (symlinkSync('/dev/zero', e.config), e.config)],
    ['hook.conf world-writable', (e) => (writeFileSync(e.config, 'reserve_mib = 0\n'), chmodSync(e.config, 0o646), e.config)],
    ['hook.conf not root-owned', (e) => (writeFileSync(e.config, 'reserve_mib = 0\n'), chownSync(e.config, 4321, 0), e.config)],
    ['status XML FIFO', (e) => (spawnSync('mkfifo', [join(e.runDir, 'other.xml')]), join(e.runDir, 'other.xml'))],
    ['status XML -> /dev/zero', (e) => (symlinkSync('/dev/zero', join(e.runDir, 'other.xml')), join(e.runDir, 'other.xml'))],
    ['status XML world-writable', (e) => (writeFileSync(join(e.runDir, 'other.xml'), liveStatus({ xml: named(converted, 'other', 9), name: 'other', uuid: uuidN(9) }, 1)), chmodSync(join(e.runDir, 'other.xml'), 0o666), join(e.runDir, 'other.xml'))],
  ];
  for (const [what, plant] of plantings) {
    const e = hostEnv();
    const file = plant(e);
    for (const via of ['bin', 'shim'] as const) {
      const r = call(via, e, ['f', 'prepare', 'begin', '-'], converted, 20_000);
      assert.ok(r.ms < 15_000, `${via} ${what}: took ${r.ms} ms (hung?)`);
      assertRefused(r, `${via} ${what}`, 'refusing to start f', file);
      // A non-SEV domain never reads them.
      assertPassed(call(via, e, ['p', 'prepare', 'begin', '-'], plain, 20_000), `${via} ${what}: untagged`);
    }
  }
});

// ---- 6. concurrent starts

const converted12 = convert(tagged.replace("<memory unit='GiB'>2</memory>", "<memory unit='GiB'>12</memory>"));
function bigGuest(name: string, n: number): string {
  return named(converted12, name, n);
}

test('two 12 GiB guests prepared at once on a 24 GiB host: exactly one is accepted; started/stopped/release settle the reservation', async () => {
  const a = bigGuest('big-a', 201);
  const b = bigGuest('big-b', 202);
  assert.match(a, /<memory unit='GiB'>12<\/memory>/);
  for (let round = 0; round < 4; round++) {
    const e = hostEnv({ memTotalKiB: 24 * 1024 * 1024 });
    const via = round % 2 === 0 ? 'shim' : 'bin';
    const [ra, rb] = await Promise.all([callAsync(via, e, ['big-a', 'prepare', 'begin', '-'], a), callAsync(via, e, ['big-b', 'prepare', 'begin', '-'], b)]);
    const accepted = [ra, rb].filter((r) => r.code === 0);
    assert.is(accepted.length, 1, `round ${round} (${via}): exactly one accepted: ${ra.code} ${ra.stderr} | ${rb.code} ${rb.stderr}`);
    const refused = ra.code === 0 ? rb : ra;
    assertRefused(refused, `round ${round} loser`, 'SEV memory is pinned');
    const [winName, winXml, loseName, loseXml] = ra.code === 0 ? ['big-a', a, 'big-b', b] : ['big-b', b, 'big-a', a];

    // libvirt writes the status XML after prepare; `started` turns the reservation into that fact.
    writeFileSync(join(e.runDir, `${winName}.xml`), liveStatus({ xml: winXml, name: winName, uuid: '' }, 1));
    assertPassed(call(via, e, [winName, 'started', 'begin', '-'], winXml), 'started');
    assertRefused(call(via, e, [loseName, 'prepare', 'begin', '-'], loseXml), 'still running', 'SEV memory is pinned');
    // The guest stops: libvirt removes the status XML, and stopped/release drop any reservation.
    rmSync(join(e.runDir, `${winName}.xml`));
    assertPassed(call(via, e, [winName, 'stopped', 'end', '-'], winXml), 'stopped');
    assertPassed(call(via, e, [winName, 'release', 'end', '-'], winXml), 'release');
    assertPassed(call(via, e, [loseName, 'prepare', 'begin', '-'], loseXml), 'after release');
    // A prepare whose start failed without release (libvirtd crashed): the reservation holds, then expires.
    assertRefused(call(via, e, [winName, 'prepare', 'begin', '-'], winXml), 'reserved', 'SEV memory is pinned');
    const lockDir = e.env['SEV_XFORM_LOCK_DIR']!;
    const reservations = readdirSync(lockDir).filter((f) => f.startsWith('reserved-'));
    assert.is(reservations.length, 1, `one reservation: ${reservations.join(', ')}`);
    for (const f of reservations) {
      const old = new Date(Date.now() - 3600_000);
      utimesSync(join(lockDir, f), old, old);
    }
    assertPassed(call(via, e, [winName, 'prepare', 'begin', '-'], winXml), 'stale reservation expired');
  }
});

test('the lock folder: a symlink, a folder not owned by root, or one others can write is refused naming it', () => {
  for (const [what, plant] of [
    ['symlink', (d: string) => (mkdirSync(`${d}.real`, { mode: 0o700 }), symlinkSync(`${d}.real`, d))],
    ['not root-owned', (d: string) => (mkdirSync(d, { mode: 0o700 }), chownSync(d, 4321, 4321))],
    ['world-writable', (d: string) => (mkdirSync(d), chmodSync(d, 0o777))],
    ['a file', (d: string) => writeFileSync(d, '')],
    ['holding a symlinked lock file', (d: string) => (mkdirSync(d, { mode: 0o700 }), symlinkSync('/etc/hostname', join(d, 'prepare.lock')))],
    ['holding a FIFO as a reservation', (d: string) => (mkdirSync(d, { mode: 0o700 }), spawnSync('mkfifo', [join(d, `reserved-${'0'.repeat(64)}.json`)]))],
  ] as const) {
    const e = hostEnv();
    const dir = e.env['SEV_XFORM_LOCK_DIR']!;
    plant(dir);
    assertRefused(call('bin', e, ['l', 'prepare', 'begin', '-'], converted), `lock dir ${what}`, 'refusing to start l', dir);
    assertPassed(call('bin', e, ['p', 'prepare', 'begin', '-'], plain), `lock dir ${what}: untagged`);
  }
});

test.run();
