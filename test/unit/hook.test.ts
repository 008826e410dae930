// The libvirt qemu hook, driven with the exact arguments libvirt passes
// (`sev-xform hook NAME OPERATION SUB-OPERATION -`, domain XML on stdin).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, type CliRun } from '../support/run-cli.js';
import { runHook } from '../../src/hook/run.js';
import { parseHookConfig } from '../../src/hook/config.js';
import type { Io } from '../../src/io.js';
import { GiB, HOST_ARGS, convert, domcaps, fixture, hookEnvsFor, renamed, uuidN, type HookEnv } from '../fixtures-hook/env.js';

const plain = fixture('plain.xml');
const tagged = fixture('tagged.xml');
const taggedEs = fixture('tagged-es.xml');
const lsOnly = fixture('ls-only.xml');
const converted = convert(tagged);
const convertedEs = convert(taggedEs);

const hostEnv = hookEnvsFor(test);

function hook(e: HookEnv, name: string, op: string, sub: string, stdin: string | Uint8Array): Promise<CliRun> {
  return runCli(['hook', name, op, sub, '-'], { stdin, env: e.env });
}

function assertRefused(r: CliRun, prefix: string, ...mentions: string[]): void {
  assert.is(r.code, 1, `exit code; stderr: ${r.stderr}`);
  assert.is(r.stdout, '');
  assert.ok(r.stderr.startsWith(prefix), `stderr starts with '${prefix}': ${r.stderr}`);
  assert.is(r.stderr.split('\n').length, 2, `one stderr line: ${r.stderr}`);
  for (const m of mentions) assert.ok(r.stderr.includes(m), `stderr mentions '${m}': ${r.stderr}`);
}

function assertAccepted(r: CliRun): void {
  assert.is(r.stderr, '', 'no stderr');
  assert.is(r.code, 0);
  assert.is(r.stdout, '', 'empty stdout (libvirt reads it as "unchanged")');
}

// ---- operations that do not concern SEV

const OTHER_CALLS: Array<[string, string]> = [
  ['start', 'begin'],
  ['started', 'begin'],
  ['stopped', 'end'],
  ['release', 'end'],
  ['reconnect', 'begin'],
  ['attach', 'begin'],
  ['prepare', 'end'],
];

test('every other operation exits 0 at once without reading stdin', async () => {
  for (const [op, sub] of OTHER_CALLS) {
    let reads = 0;
    let out = '';
    const io: Io = {
      readStdin: () => {
        reads++;
        return Promise.reject(new Error('stdin must not be read'));
      },
      readFile: () => {
        throw new Error('no file may be read');
      },
      stdout: (t) => void (out += t),
      stderr: (t) => void (out += t),
      env: { SEV_XFORM_STATE_DIR: '/nonexistent' },
      run: () => {
        throw new Error('the hook never runs commands');
      },
    };
    const code = await runHook(['vm1', op, sub, '-'], io);
    assert.is(code, 0, `${op} ${sub}`);
    assert.is(reads, 0, `${op} ${sub} read stdin`);
    assert.is(out, '', `${op} ${sub} printed something`);
  }
});

test('every other operation through the command line: exit 0, no output, even for an unconverted tagged domain', async () => {
  const e = hostEnv({ cache: false });
  for (const [op, sub] of OTHER_CALLS) assertAccepted(await hook(e, 'tagged', op, sub, tagged));
});

// ---- prepare begin

test('prepare: a domain without tag or launchSecurity passes, even on a host without SEV', async () => {
  const e = hostEnv({ domcaps: fixture('domcaps-no-sev.xml') });
  assertAccepted(await hook(e, 'plain', 'prepare', 'begin', plain));
});

test('prepare: an unconverted tagged domain is refused with the command that converts it', async () => {
  const e = hostEnv();
  const r = await hook(e, 'tagged', 'prepare', 'begin', tagged);
  assertRefused(
    r,
    'sev-xform: refusing to start tagged unencrypted: launch-security: ',
    '`sev-xform apply tagged`',
    '`virsh dumpxml --inactive tagged | sev-xform | virsh define /dev/stdin`',
  );
});

test('prepare: launchSecurity without the tag is checked too, and the command says --all', async () => {
  const e = hostEnv();
  const r = await hook(e, 'ls-only', 'prepare', 'begin', lsOnly);
  assertRefused(r, 'sev-xform: refusing to start ls-only unencrypted: ', '`sev-xform apply --all ls-only`', '| sev-xform --all |');
});

test('prepare: a name that needs quoting is quoted in the suggested command', async () => {
  const e = hostEnv();
  const r = await hook(e, "bob's vm", 'prepare', 'begin', tagged);
  assertRefused(r, "sev-xform: refusing to start bob's vm unencrypted:", `\`sev-xform apply 'bob'\\''s vm'\``);
});

test('prepare: a 128 KiB name is cut in the refusal line, and the suggested commands say VM instead of a wrong name', async () => {
  const e = hostEnv();
  const long = 'x'.repeat(128 * 1024);
  const r = await hook(e, long, 'prepare', 'begin', tagged);
  assertRefused(r, `sev-xform: refusing to start ${'x'.repeat(256)}...(131072 characters) unencrypted:`, '`sev-xform apply VM`');
  assert.ok(r.stderr.length < 4096, `refusal line is ${r.stderr.length} bytes`);
});

test('prepare: for a name that starts with -, the suggested commands put it after -- and --domain', async () => {
  const e = hostEnv();
  const r = await hook(e, '--web', 'prepare', 'begin', tagged);
  assertRefused(r, 'sev-xform: refusing to start --web unencrypted:', '`sev-xform apply -- --web`', '`virsh dumpxml --inactive --domain --web |');
});

test('prepare: converted SEV and SEV-ES domains are accepted', async () => {
  const e = hostEnv();
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
  assertAccepted(await hook(e, 'tagged-es', 'prepare', 'begin', convertedEs));
});

test('prepare: whatever the filter converts, the hook accepts; what check rejects, the hook refuses', async () => {
  const e = hostEnv();
  for (const [name, xml] of [['tagged', tagged], ['tagged-es', taggedEs], ['ls-only', lsOnly]] as const) {
    const out = await runCli([...HOST_ARGS, '--all'], { stdin: xml });
    assert.is(out.code, 0, out.stderr);
    assertAccepted(await hook(e, name, 'prepare', 'begin', out.stdout));
    const check = await runCli(['check', '--cache', e.cache], { stdin: xml });
    const verdict = await hook(e, name, 'prepare', 'begin', xml);
    assert.is(verdict.code, check.code, `${name}: hook and check agree (${check.stdout})`);
  }
});

test('prepare: a host without SEV refuses a converted domain', async () => {
  const e = hostEnv({ domcaps: fixture('domcaps-no-sev.xml') });
  const r = await hook(e, 'tagged', 'prepare', 'begin', converted);
  assertRefused(r, 'sev-xform: refusing to start tagged unencrypted: host: ', "supported='no'", 'see `sev-xform host`');
  assert.not.ok(r.stderr.includes('sev-xform apply'), 'converting cannot help here');
});

test('prepare: a domain the filter refuses is refused with what to fix first', async () => {
  const e = hostEnv();
  const hostdev =
    "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>\n      </source>\n    </hostdev>\n  </devices>";
  const r = await hook(e, 'tagged', 'prepare', 'begin', converted.replace('  </devices>', hostdev));
  assertRefused(r, 'sev-xform: refusing to start tagged unencrypted: refused: domain/devices/hostdev', 'fix that, then convert it with `sev-xform apply tagged`');
});

test('prepare: a numeric domain name stays a name', async () => {
  const e = hostEnv();
  const r = await hook(e, '0123', 'prepare', 'begin', tagged);
  assertRefused(r, 'sev-xform: refusing to start 0123 unencrypted:', 'sev-xform apply 0123');
});

// ---- SEV slots

test('prepare: refused when every SEV slot is taken by running guests', async () => {
  const running = [renamed(converted, 'run1', uuidN(1)), renamed(converted, 'run2', uuidN(2))];
  const e = hostEnv({ domcaps: domcaps(2, 1), running });
  assertRefused(
    await hook(e, 'tagged', 'prepare', 'begin', converted),
    'sev-xform: refusing to start tagged: the host has 2 SEV guest slot(s)',
    '<maxGuests>',
    e.cache,
    'run1, run2',
  );
});

test('prepare: one free slot is enough', async () => {
  const e = hostEnv({ domcaps: domcaps(2, 1), running: [renamed(converted, 'run1', uuidN(1))] });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
});

test("prepare: the domain's own live file does not count against it, by name or by uuid", async () => {
  const self = renamed(converted, 'tagged', '0b7a3c1e-1111-4c2a-9e55-000000000002');
  const sameUuid = renamed(converted, 'old-name', '0B7A3C1E-1111-4C2A-9E55-000000000002');
  const e = hostEnv({ domcaps: domcaps(2, 1), running: [self, sameUuid, renamed(converted, 'run1', uuidN(1))] });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
});

test('prepare: SEV and SEV-ES slots are separate pools', async () => {
  const e = hostEnv({ domcaps: domcaps(1, 1), running: [renamed(convertedEs, 'es1', uuidN(1))] });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
  assertRefused(
    await hook(e, 'tagged-es', 'prepare', 'begin', convertedEs),
    'sev-xform: refusing to start tagged-es: the host has 1 SEV-ES guest slot(s)',
    '<maxESGuests>',
    'es1',
  );
});

test('prepare: running guests without launchSecurity hold no slot', async () => {
  const running = [renamed(tagged, 'unconverted', uuidN(1)), renamed(plain, 'plain', uuidN(2))];
  const e = hostEnv({ domcaps: domcaps(1, 0), running });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
});

test('prepare: <maxGuests>0 (a host that emulates SEV) is not counted; no SEV-ES slots refuse an SEV-ES guest', async () => {
  const e = hostEnv({ domcaps: domcaps(0, 0), running: [renamed(converted, 'run1', uuidN(1))] });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
  assertRefused(await hook(e, 'tagged-es', 'prepare', 'begin', convertedEs), 'sev-xform: refusing to start tagged-es unencrypted: host: ', 'no SEV-ES slots');
});

test('prepare: without <maxGuests> (libvirt < 8.0) slots are not counted', async () => {
  const caps = domcaps().replace(/\s*<maxGuests>\d+<\/maxGuests>/, '').replace(/\s*<maxESGuests>\d+<\/maxESGuests>/, '');
  const running = [1, 2, 3].map((n) => renamed(converted, `run${n}`, uuidN(n)));
  const e = hostEnv({ domcaps: caps, running });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
});

// ---- memory (the converted domain pins 2 GiB + 16 MiB = 2064 MiB, and its QEMU may use 256 MiB + 8 MiB (RAM/256) more: 2328 MiB)

test('prepare: refused when pinned memory would exceed MemTotal minus the default 2048 MiB reserve', async () => {
  const running = [renamed(converted, 'run1', uuidN(1)), renamed(converted, 'run2', uuidN(2))];
  const e = hostEnv({ memTotalKiB: 8 * GiB, running });
  assertRefused(
    await hook(e, 'tagged', 'prepare', 'begin', converted),
    'sev-xform: refusing to start tagged: its memory (2328 MiB: pinned RAM, video and ROMs plus 256 MiB for QEMU itself and 1/256 of RAM for its page tables) plus that of 2 running or starting SEV guest(s) (4656 MiB) exceeds MemTotal 8192 MiB',
    'the 2048 MiB reserve',
    e.config,
  );
});

test('prepare: the same start fits with one running guest less', async () => {
  const e = hostEnv({ memTotalKiB: 8 * GiB, running: [renamed(converted, 'run1', uuidN(1))] });
  assertAccepted(await hook(e, 'tagged', 'prepare', 'begin', converted));
});

test('prepare: reserve_mib in hook.conf sets the reserve', async () => {
  const running = [renamed(converted, 'run1', uuidN(1)), renamed(converted, 'run2', uuidN(2))];
  const small = hostEnv({ memTotalKiB: 8 * GiB, running, config: '# host reserve\nreserve_mib = 0\n' });
  assertAccepted(await hook(small, 'tagged', 'prepare', 'begin', converted));
  const big = hostEnv({ memTotalKiB: 8 * GiB, config: 'reserve_mib=6200\n' });
  assertRefused(await hook(big, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: its memory', 'the 6200 MiB reserve');
});

test('prepare: qemu_overhead_mib in hook.conf is the QEMU overhead of both the check and the memory accounting', async () => {
  // Converted with --qemu-overhead 128MiB: hard_limit = 2064 + 128 + 8 (page tables) MiB.
  const small = converted.replace(/<hard_limit unit='KiB'>\d+</, `<hard_limit unit='KiB'>${(2064 + 128 + 8) * 1024}<`);
  assert.ok(small !== converted);
  const byDefault = hostEnv({ memTotalKiB: 8 * GiB });
  assertRefused(await hook(byDefault, 'tagged', 'prepare', 'begin', small), 'sev-xform: refusing to start tagged unencrypted: memory-pinning: needs change: raised <memtune><hard_limit>');
  const configured = hostEnv({ memTotalKiB: 8 * GiB, config: 'qemu_overhead_mib = 128\n' });
  assertAccepted(await hook(configured, 'tagged', 'prepare', 'begin', small));
  // Three such guests (3 x 2200 MiB) fit in 8192 MiB without a reserve; configured for 512 MiB, the same domain is no longer correct.
  const running = [renamed(small, 'run1', uuidN(1)), renamed(small, 'run2', uuidN(2))];
  assertAccepted(await hook(hostEnv({ memTotalKiB: 8 * GiB, running, config: 'reserve_mib = 0\nqemu_overhead_mib = 128\n' }), 'tagged', 'prepare', 'begin', small));
  assertRefused(
    await hook(hostEnv({ memTotalKiB: 8 * GiB, running, config: 'reserve_mib = 512\nqemu_overhead_mib = 512\n' }), 'tagged', 'prepare', 'begin', small),
    'sev-xform: refusing to start tagged unencrypted: memory-pinning: needs change',
  );
});

test("prepare: a running guest's hard limit counts when larger than its estimate; locked memory counts the estimate", async () => {
  const bigLimit = renamed(converted.replace(/<hard_limit unit='KiB'>\d+</, `<hard_limit unit='GiB'>6<`), 'big', uuidN(1));
  const e = hostEnv({ memTotalKiB: 10 * GiB, running: [bigLimit] });
  assertRefused(await hook(e, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: its memory (2328 MiB: pinned RAM, video and ROMs plus 256 MiB for QEMU itself and 1/256 of RAM for its page tables) plus that of 1 running or starting SEV guest(s) (6144 MiB)');
  const locked = converted.replace(/  <memtune>\n.*\n  <\/memtune>\n/, '  <memoryBacking>\n    <locked/>\n  </memoryBacking>\n');
  assert.ok(locked.includes('<locked/>') && !locked.includes('hard_limit'));
  const e2 = hostEnv({ memTotalKiB: 6 * GiB, running: [renamed(locked, 'locked', uuidN(2))] });
  assertRefused(await hook(e2, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: its memory (2328 MiB: pinned RAM, video and ROMs plus 256 MiB for QEMU itself and 1/256 of RAM for its page tables) plus that of 1 running or starting SEV guest(s) (2328 MiB)');
});

test('hook.conf parser: comments, blank lines, errors name the line', () => {
  assert.equal(parseHookConfig('\n# x\n reserve_mib = 512 # trailing\n', 'f'), { reserveMiB: 512, qemuOverheadMiB: 256 });
  assert.equal(parseHookConfig('', 'f'), { reserveMiB: 2048, qemuOverheadMiB: 256 });
  assert.equal(parseHookConfig('qemu_overhead_mib = 384\nreserve_mib = 0', 'f'), { reserveMiB: 0, qemuOverheadMiB: 384 });
  assert.throws(() => parseHookConfig('qemu_overhead_mib = 256MiB', 'f'), /f line 1: qemu_overhead_mib '256MiB' is not a whole number of MiB/);
  assert.throws(() => parseHookConfig('toString = 1', 'f'), /unknown key 'toString'/);
  assert.throws(() => parseHookConfig('reserve_mib 5', 'f'), /f line 1/);
  assert.throws(() => parseHookConfig('\nreserve_mb = 5', 'f'), /f line 2: unknown key 'reserve_mb'/);
  assert.throws(() => parseHookConfig('reserve_mib = -1', 'f'), /not a whole number/);
});

// ---- migrate and restore

test('migrate begin / restore begin: SEV domains (tagged, converted, launchSecurity only) are refused', async () => {
  const e = hostEnv();
  for (const [name, xml] of [['tagged', tagged], ['tagged', converted], ['ls-only', lsOnly]] as const) {
    assertRefused(await hook(e, name, 'migrate', 'begin', xml), `sev-xform: refusing to migrate ${name}: it is an SEV domain`, 'live migration');
    assertRefused(await hook(e, name, 'restore', 'begin', xml), `sev-xform: refusing to restore ${name}: it is an SEV domain`, `virsh managedsave-remove ${name}`);
  }
});

test('migrate begin / restore begin: a non-SEV domain passes with empty stdout, with no host cache at all', async () => {
  const e = hostEnv({ cache: false });
  assertAccepted(await hook(e, 'plain', 'migrate', 'begin', plain));
  assertAccepted(await hook(e, 'plain', 'restore', 'begin', plain));
});

// ---- faults: missing or corrupt files

const CORRUPT_CACHES: Array<[string, string | false]> = [
  ['missing', false],
  ['not JSON', '{"version": 1,'],
  ['another version', JSON.stringify({ version: 99 })],
  [
    'domcaps not XML',
    JSON.stringify({ version: 1, written: '', domcaps: '<domainCapabilities><features>', firmware: [], firmwareDirs: [], memTotalKiB: 1 }),
  ],
];

for (const [what, cache] of CORRUPT_CACHES) {
  test(`host cache ${what}: non-SEV domains pass untouched, SEV domains are refused naming the file`, async () => {
    const e = hostEnv({ cache });
    assertAccepted(await hook(e, 'plain', 'prepare', 'begin', plain));
    assertRefused(await hook(e, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: host: host cache', e.cache);
    assertRefused(await hook(e, 'tagged', 'prepare', 'begin', tagged), 'sev-xform: refusing to start tagged: host: host cache', e.cache);
    assertRefused(await hook(e, 'ls-only', 'prepare', 'begin', lsOnly), 'sev-xform: refusing to start ls-only: host: host cache', e.cache);
  });
}

test('corrupt hook.conf: non-SEV domains pass, SEV domains are refused naming the file', async () => {
  for (const config of ['reserve_mib = lots\n', 'reserve_mb = 1024\n', 'garbage\n']) {
    const e = hostEnv({ config });
    assertAccepted(await hook(e, 'plain', 'prepare', 'begin', plain));
    assertRefused(await hook(e, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: ', `${e.config} line 1`);
  }
});

test('hook.conf that is a folder: refused naming it', async () => {
  const e = hostEnv();
  const dir = join(e.root, 'conf-dir');
  mkdirSync(dir);
  const r = await runCli(['hook', 'tagged', 'prepare', 'begin', '-'], { stdin: converted, env: { ...e.env, SEV_XFORM_HOOK_CONF: dir } });
  assertRefused(r, 'sev-xform: refusing to start tagged: ', dir, 'not a regular file');
});

test('a broken live status file: non-SEV domains pass, SEV domains are refused naming it', async () => {
  const e = hostEnv();
  const broken = join(e.runDir, 'broken.xml');
  writeFileSync(broken, "<domstatus state='running'>\n  <domain type='kvm'>\n    <launchSecurity type='sev'>\n");
  assertAccepted(await hook(e, 'plain', 'prepare', 'begin', plain));
  assertRefused(await hook(e, 'tagged', 'prepare', 'begin', converted), 'sev-xform: refusing to start tagged: ', broken);
});

test('a missing run folder means nothing runs', async () => {
  const e = hostEnv();
  const r = await runCli(['hook', 'tagged', 'prepare', 'begin', '-'], { stdin: converted, env: { ...e.env, SEV_XFORM_RUN_DIR: join(e.root, 'none') } });
  assertAccepted(r);
});

// ---- faults: the domain XML itself

test('XML that cannot be parsed: passes with a note unless its text mentions the tag or launchSecurity', async () => {
  const e = hostEnv();
  for (const op of ['prepare', 'migrate', 'restore']) {
    for (const stdin of ['', 'not xml at all', plain.slice(0, 200), new Uint8Array([0xff, 0xfe, 0x00])]) {
      const r = await hook(e, 'broken', op, 'begin', stdin);
      assert.is(r.code, 0, `${op}: ${r.stderr}`);
      assert.is(r.stdout, '');
      assert.ok(r.stderr.startsWith(`sev-xform: note: hook ${op} begin for broken: `), r.stderr);
      assert.is(r.stderr.split('\n').length, 2, 'one note line');
    }
    const verb = op === 'prepare' ? 'start' : op;
    for (const stdin of [tagged.slice(0, 200), converted.replace('</domain>', ''), converted.replace('<domain', '<domian')]) {
      const r = await hook(e, 'broken', op, 'begin', stdin);
      assertRefused(r, `sev-xform: refusing to ${verb} broken: `, 'treated as an SEV domain');
    }
  }
});

test('hook without an operation is a usage error', async () => {
  const r = await runCli(['hook', 'vm1'], { stdin: plain });
  assert.is(r.code, 2);
  assert.is(r.stdout, '');
});

test('the hook writes only its lock and the accepted prepare\'s reservation (in the lock folder), nothing in the state and run folders', async () => {
  const e = hostEnv({ running: [renamed(converted, 'run1', uuidN(1))] });
  const before = [readdirSync(e.stateDir), readdirSync(e.runDir), readdirSync(e.root)];
  await hook(e, 'tagged', 'prepare', 'begin', tagged);
  assert.equal([readdirSync(e.stateDir), readdirSync(e.runDir), readdirSync(e.root)], before, 'a refused prepare writes nothing');
  await hook(e, 'tagged', 'prepare', 'begin', converted);
  assert.equal([readdirSync(e.stateDir), readdirSync(e.runDir), readdirSync(e.root).filter((f) => f !== 'lock')], before);
  const lock = readdirSync(e.lockDir).sort();
  assert.is(lock.length, 2, lock.join(', '));
  assert.is(lock[0], 'prepare.lock');
  assert.match(lock[1]!, /^reserved-[0-9a-f]{64}\.json$/);
  assert.is(statSync(e.lockDir).mode & 0o777, 0o700);
  await hook(e, 'tagged', 'release', 'end', converted);
  assert.equal(readdirSync(e.lockDir), ['prepare.lock'], 'release drops the reservation');
});

test('over the 64 MiB limit: the rest of stdin is scanned in chunks, a marker split across chunks is found, and without a way to read on it is SEV', async () => {
  const e = hostEnv();
  const first = Buffer.alloc(64 * 1024 * 1024 + 1, 0x20);
  const marker = 'urn:sev-xform:domain:1';
  const run = async (chunks: string[] | undefined): Promise<{ code: number; err: string }> => {
    let err = '';
    const io: Io = {
      readStdin: async () => first,
      readFile: () => new Uint8Array(),
      stdout: () => undefined,
      stderr: (t) => void (err += t),
      env: e.env,
      run: () => ({ status: null, stdout: '', stderr: '', error: 'none' }),
      ...(chunks === undefined
        ? {}
        : {
            async *readStdinRest() {
              for (const c of chunks) yield Buffer.from(c, 'latin1');
            },
          }),
    };
    return { code: await runHook(['big', 'prepare', 'begin', '-'], io), err };
  };
  for (let cut = 0; cut <= marker.length; cut++) {
    const r = await run(['x'.repeat(100) + marker.slice(0, cut), marker.slice(cut) + 'y'.repeat(100)]);
    assert.is(r.code, 1, `split at ${cut}: ${r.err}`);
  }
  // Split between the first 64 MiB and the rest.
  first.write(marker.slice(0, 9), first.length - 9, 'latin1');
  assert.is((await run([marker.slice(9)])).code, 1, 'split at the limit');
  first.fill(0x20);
  assert.is((await run(['x', 'URN:SEV-XFORM:DOMAIN:1'])).code, 1, 'the namespace in capitals, as the shim matches it');
  const tiny = await run(['<launch', 'Security type="sev">']);
  assert.is(tiny.code, 1, 'chunks shorter than the overlap');
  const clean = await run(['a'.repeat(1000), 'b'.repeat(1000)]);
  assert.is(clean.code, 0, clean.err);
  assert.match(clean.err, /note: .*larger than the 64 MiB limit.* not blocked/);
  assert.is((await run(undefined)).code, 1, 'no readStdinRest: treated as SEV');
});

test.run();
