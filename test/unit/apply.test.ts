// `sev-xform apply` against a fake virsh that keeps domain definitions in memory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli.js';
import type { Io } from '../../src/io.js';
import type { CommandResult, RunCommand } from '../../src/host/facts.js';
import { writeBackup } from '../../src/commands/apply.js';
import { HOST_ARGS, convert, fixture } from '../fixtures-hook/env.js';

const tagged = fixture('tagged.xml');
const converted = convert(tagged);
const plain = fixture('plain.xml');

interface Domain {
  xml: string;
  state: string;
}

interface FakeVirsh {
  domains: Record<string, Domain>;
  calls: string[][];
  run: RunCommand;
}

/** A libvirt with `domains`; define fails for the first `failDefines` calls; `onDefine` sees each define before it happens. */
function fakeVirsh(domains: Record<string, Domain>, opts: { failDefines?: number; onDefine?: (file: string) => void } = {}): FakeVirsh {
  const calls: string[][] = [];
  let failures = opts.failDefines ?? 0;
  const run: RunCommand = (cmd, argv): CommandResult => {
    let args = argv;
    calls.push([cmd, ...argv]);
    if (cmd !== 'virsh') return { status: null, stdout: '', stderr: '', error: `spawnSync ${cmd} ENOENT` };
    if (args[0] === '--connect') args = args.slice(2);
    const sub = args[0];
    const name = args[args.length - 1] ?? '';
    if (sub === 'dumpxml' || sub === 'domstate') {
      const d = domains[name];
      if (!d) return { status: 1, stdout: '', stderr: `error: failed to get domain '${name}'\n` };
      return sub === 'dumpxml' ? { status: 0, stdout: d.xml, stderr: '' } : { status: 0, stdout: `${d.state}\n\n`, stderr: '' };
    }
    if (sub === 'define') {
      opts.onDefine?.(name);
      const xml = readFileSync(name, 'utf8');
      if (failures > 0) {
        failures--;
        return { status: 1, stdout: '', stderr: `error: Failed to define domain from ${name}\nerror: unsupported configuration: fake\n` };
      }
      const defined = /<name>([^<]*)<\/name>/.exec(xml)?.[1] ?? '';
      domains[defined] = { xml, state: domains[defined]?.state ?? 'shut off' };
      return { status: 0, stdout: `Domain '${defined}' defined from ${name}\n\n`, stderr: '' };
    }
    if (sub === 'domcapabilities') return { status: 0, stdout: fixture('domcaps-sev-es.xml'), stderr: '' };
    return { status: 1, stdout: '', stderr: `error: unknown command '${sub}'\n` };
  };
  return { domains, calls, run };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let stateDir = '';
let tmp = '';
let savedTmpdir: string | undefined;

test.before.each(() => {
  stateDir = mkdtempSync(join(tmpdir(), 'sev-xform-apply-state-'));
  tmp = mkdtempSync(join(tmpdir(), 'sev-xform-apply-tmp-'));
  // apply's temporary file goes to os.tmpdir(); point it here to see that nothing is left behind.
  savedTmpdir = process.env['TMPDIR'];
  process.env['TMPDIR'] = tmp;
});

test.after.each(() => {
  if (savedTmpdir === undefined) delete process.env['TMPDIR'];
  else process.env['TMPDIR'] = savedTmpdir;
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(tmp, { recursive: true, force: true });
});

function makeIo(fake: FakeVirsh, out: Run): Io {
  return {
    readStdin: async () => new Uint8Array(),
    readFile: (p) => readFileSync(p),
    stdout: (t) => void (out.stdout += t),
    stderr: (t) => void (out.stderr += t),
    env: { HOME: '/nonexistent' },
    run: fake.run,
  };
}

async function apply(fake: FakeVirsh, args: string[], out: Run = { code: -1, stdout: '', stderr: '' }): Promise<Run> {
  out.code = await main(['apply', ...HOST_ARGS, '--state-dir', stateDir, ...args], makeIo(fake, out));
  return out;
}

function backups(): string[] {
  const dir = join(stateDir, 'backup');
  return existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)) : [];
}

test('apply: converts, keeps the original as a backup, defines the result', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } });
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 0, r.stderr);
  assert.is(fake.domains['tagged']!.xml, converted, 'the defined XML is the filter output');
  const [backup, ...others] = backups();
  assert.ok(backup && others.length === 0, 'one backup');
  assert.match(backup, /\/backup\/0b7a3c1e-1111-4c2a-9e55-000000000002-\d{8}T\d{6}\.\d{3}Z\.xml$/, 'named by UUID and UTC time');
  assert.is(readFileSync(backup, 'utf8'), tagged, 'the backup is the original');
  assert.is(statSync(backup).mode & 0o777, 0o600, 'the backup may hold passwords');
  assert.is(statSync(join(stateDir, 'backup')).mode & 0o777, 0o700);
  assert.ok(r.stdout.includes(`tagged: defined as an SEV guest`) && r.stdout.includes(backup), r.stdout);
  assert.ok(r.stdout.includes('tagged: launch-security: added <launchSecurity'), 'lists the changes');
  assert.not.ok(r.stdout.includes('next boot'), 'a shut-off domain needs no reboot note');
  assert.equal(
    fake.calls.map((c) => c.slice(0, 3)),
    [
      ['virsh', 'dumpxml', '--inactive'],
      ['virsh', 'define', '--file'],
      ['virsh', 'domstate', '--domain'],
    ],
  );
  assert.ok(fake.calls[0]!.includes('--security-info'), 'dumpxml keeps passwords, or define would drop them');
  assert.equal(fake.calls[0]!.slice(-2), ['--domain', 'tagged'], 'the name is never taken for an option');
  assert.equal(readdirSync(tmp), [], 'the temporary file is gone');
});

test('apply: a running domain is told that the change applies at its next boot', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'running' } });
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes('tagged: is running: the change applies at its next boot'), r.stdout);
});

test('apply: when define fails, the original is defined again from the backup and the message says where it is', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } }, { failDefines: 1 });
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 1);
  const [backup] = backups();
  assert.ok(backup);
  const last = r.stderr.trim().split('\n').pop()!;
  assert.match(last, /^sev-xform: tagged: `virsh define` of the converted XML failed \(Failed to define domain from \S+: unsupported configuration: fake\); /);
  assert.ok(last.endsWith(`the original definition was defined again from ${backup}`), last);
  assert.equal(fake.calls.filter((c) => c[1] === 'define').map((c) => c[3] === backup), [false, true]);
  assert.is(fake.domains['tagged']!.xml, tagged, 'the definition is the original');
  assert.is(readFileSync(backup, 'utf8'), tagged);
  assert.equal(readdirSync(tmp), []);
});

test('apply: when restoring fails too, the message tells the command that restores it', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } }, { failDefines: 2 });
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 1);
  const [backup] = backups();
  assert.ok(r.stderr.includes(`restoring the original failed too (Failed to define domain from ${backup}: unsupported configuration: fake)`) && r.stderr.includes(`run \`virsh define ${backup}\``), r.stderr);
});

test('apply: the backup is on disk and named before define runs (a kill at that point loses nothing)', async () => {
  const out: Run = { code: -1, stdout: '', stderr: '' };
  let seen = 0;
  const fake = fakeVirsh(
    { tagged: { xml: tagged, state: 'shut off' } },
    {
      onDefine: (file) => {
        if (seen++ > 0) return;
        const [backup] = backups();
        assert.ok(backup, 'backup exists before define');
        assert.is(readFileSync(backup, 'utf8'), tagged);
        assert.ok(out.stderr.includes(`sev-xform: tagged: original definition saved to ${backup}\n`), out.stderr);
        assert.is(readFileSync(file, 'utf8'), converted);
        assert.is(fake.domains['tagged']!.xml, tagged, 'nothing defined yet');
      },
    },
  );
  await apply(fake, ['tagged'], out);
  assert.is(out.code, 0, out.stderr);
  assert.is(seen, 1);
});

test('apply --dry-run: prints the diff, defines nothing, writes no backup', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'running' } });
  const r = await apply(fake, ['--dry-run', 'tagged']);
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith('===================================================================\n--- a/tagged.xml\n+++ b/tagged.xml\n'), r.stdout);
  assert.ok(r.stdout.includes("+  <launchSecurity type='sev'>"));
  assert.equal(fake.calls.map((c) => c[1]), ['dumpxml']);
  assert.is(fake.domains['tagged']!.xml, tagged);
  assert.not.ok(existsSync(join(stateDir, 'backup')));
});

test('apply --qemu-overhead: the hard_limit it defines leaves that much for QEMU above the pinned memory', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } });
  const r = await apply(fake, ['--qemu-overhead', '1GiB', 'tagged']);
  assert.is(r.code, 0, r.stderr);
  // tagged is 2 GiB with no video: 2048 + 16 MiB pinned + 1024 MiB for QEMU.
  assert.ok(fake.domains['tagged']!.xml.includes(`<hard_limit unit='KiB'>${(2048 + 16 + 1024 + 8) * 1024}</hard_limit>`), fake.domains['tagged']!.xml);
});

test('apply: several domains; a missing one fails alone, untagged and converted ones are left alone', async () => {
  const fake = fakeVirsh({
    tagged: { xml: tagged, state: 'shut off' },
    plain: { xml: plain, state: 'shut off' },
    done: { xml: converted.replace('<name>tagged</name>', '<name>done</name>'), state: 'running' },
  });
  const r = await apply(fake, ['missing', 'plain', 'done', 'tagged']);
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes("sev-xform: missing: `virsh dumpxml --inactive --security-info` failed (failed to get domain 'missing'); nothing changed\n"), r.stderr);
  assert.ok(r.stderr.includes("sev-xform: plain: not tagged, left unchanged; tag it with `virsh metadata plain urn:sev-xform:domain:1 --key sev --set '<sev/>' --config` or pass --all\n"));
  assert.ok(r.stderr.includes('sev-xform: done: already a correct SEV guest; nothing to change\n'));
  assert.is(fake.domains['plain']!.xml, plain);
  assert.is(fake.domains['tagged']!.xml, converted);
  assert.equal(fake.calls.filter((c) => c[1] === 'define').length, 1);
  assert.is(backups().length, 1);
});

test('apply --all converts an untagged domain', async () => {
  const fake = fakeVirsh({ plain: { xml: plain, state: 'shut off' } });
  const r = await apply(fake, ['--all', 'plain']);
  assert.is(r.code, 0, r.stderr);
  assert.ok(fake.domains['plain']!.xml.includes("<launchSecurity type='sev'>"));
});

test('apply: a domain the filter refuses is reported in one line and not touched', async () => {
  const hostdev = "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>\n      </source>\n    </hostdev>\n  </devices>";
  const xml = tagged.replace('  </devices>', hostdev);
  const fake = fakeVirsh({ tagged: { xml, state: 'shut off' } });
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 1);
  assert.ok(r.stderr.startsWith('sev-xform: tagged: refused: domain/devices/hostdev'), r.stderr);
  assert.is(r.stderr.trim().split('\n').length, 1);
  assert.is(fake.domains['tagged']!.xml, xml);
  assert.equal(backups(), []);
});

test('apply: when the backup cannot be written, nothing is defined', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } });
  writeFileSync(join(stateDir, 'backup'), 'a file where the backup folder should be');
  const r = await apply(fake, ['tagged']);
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes(`sev-xform: tagged: ${join(stateDir, 'backup')}: cannot write the backup (`) && r.stderr.includes('nothing was defined'), r.stderr);
  assert.equal(fake.calls.map((c) => c[1]), ['dumpxml']);
  assert.is(fake.domains['tagged']!.xml, tagged);
});

test('writeBackup: two backups in the same millisecond do not overwrite each other, and the names sort by time', () => {
  const dir = join(stateDir, 'backup');
  const uuid = '0b7a3c1e-1111-4c2a-9e55-000000000002';
  const now = new Date('2025-01-31T23:59:59.123Z');
  const a = writeBackup(dir, uuid, 'first', now);
  const b = writeBackup(dir, uuid, 'second', now);
  const c = writeBackup(dir, uuid, 'third', new Date('2025-01-31T23:59:59.124Z'));
  assert.is(a, join(dir, `${uuid}-20250131T235959.123Z.xml`));
  assert.is(b, join(dir, `${uuid}-20250131T235959.124Z.xml`), 'the next free millisecond');
  assert.is(c, join(dir, `${uuid}-20250131T235959.125Z.xml`));
  assert.equal([c, a, b].sort(), [a, b, c], 'written order is name order');
  assert.equal([a, b, c].map((f) => readFileSync(f, 'utf8')), ['first', 'second', 'third']);
});

/** Domain names libvirt accepts (anything without '/' or a newline) that must never become part of a path. */
const HOSTILE_NAMES = ['x'.repeat(250), '\u00e9'.repeat(200), '..', '.', 'dash-in-middle', ' lead space', 'a\\b', "q'uote\"", '$(touch pwned)', '*', '~root', 'tab\there'];

test('apply: hostile domain names, up to 250 bytes and more, reach no path: backup and temporary file are named by UUID', async () => {
  for (const name of HOSTILE_NAMES) {
    const xml = tagged.replace('<name>tagged</name>', `<name>${name.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</name>`);
    const fake = fakeVirsh({ [name]: { xml, state: 'shut off' } }, { onDefine: (file) => assert.match(file, /\/sev-xform-apply-[^/]+\/domain\.xml$/, 'the temporary file has a fixed name') });
    const r = await apply(fake, [name]);
    assert.is(r.code, 0, `${JSON.stringify(name)}: ${r.stderr}`);
    assert.ok(fake.domains[name]!.xml.includes("<launchSecurity type='sev'>"), name);
  }
  const files = backups();
  assert.is(files.length, HOSTILE_NAMES.length);
  for (const f of files) assert.match(f, /\/backup\/0b7a3c1e-1111-4c2a-9e55-000000000002-\d{8}T\d{6}\.\d{3}Z\.xml$/);
  assert.equal(readdirSync(stateDir), ['backup'], 'nothing else was written');
  assert.equal(readdirSync(tmp), []);
});

test('apply: names that start with - go after --, and every one of them is converted (none dropped)', async () => {
  const names = ['-rf', '--help', '--', 'plain-name'];
  const domains = Object.fromEntries(
    names.map((name, i) => [name, { xml: tagged.replace('<name>tagged</name>', `<name>${name}</name>`).replace(/-000000000002</, `-00000000010${i}<`), state: 'shut off' }]),
  );
  const fake = fakeVirsh(domains);
  const r = await apply(fake, ['plain-name', '--', '-rf', '--help', '--']);
  assert.is(r.code, 0, r.stderr);
  for (const name of names) assert.ok(fake.domains[name]!.xml.includes("<launchSecurity type='sev'>"), `${name} was converted`);
  const none = await apply(fakeVirsh({}), []);
  assert.is(none.code, 2);
  assert.match(none.stderr, /name at least one domain/);
});

test('apply: a domain whose XML has no usable <uuid> is not defined', async () => {
  for (const uuid of ['', 'not-a-uuid', '../../etc/passwd']) {
    const xml = tagged.replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuid}</uuid>`);
    const fake = fakeVirsh({ tagged: { xml, state: 'shut off' } });
    const r = await apply(fake, ['tagged']);
    assert.is(r.code, 1, uuid);
    assert.is(r.stderr.trim().split('\n').pop(), `sev-xform: tagged: domain/uuid '${uuid}' is not a UUID; the backup is named after it: nothing was defined`);
    assert.equal(fake.calls.map((c) => c[1]), ['dumpxml']);
  }
  assert.equal(backups(), []);
});

test('apply: without --domcaps the host facts come from virsh domcapabilities', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } });
  const out: Run = { code: -1, stdout: '', stderr: '' };
  out.code = await main(['apply', '--firmware-dirs', 'test/fixtures-hook/firmware', '--state-dir', stateDir, '--connect', 'qemu:///system', 'tagged'], makeIo(fake, out));
  assert.is(out.code, 0, out.stderr);
  assert.ok(fake.calls.some((c) => c.includes('domcapabilities')));
  assert.ok(fake.calls.every((c) => c[1] === '--connect' && c[2] === 'qemu:///system'), 'every virsh call carries --connect');
});

test('apply: a bad --firmware is a usage error', async () => {
  const fake = fakeVirsh({ tagged: { xml: tagged, state: 'shut off' } });
  const r = await apply(fake, ['--firmware', 'relative.fd', 'tagged']);
  assert.is(r.code, 2);
  assert.equal(fake.calls, []);
});

test.run();
