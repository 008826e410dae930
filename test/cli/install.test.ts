// install.sh into a temporary root (DESTDIR), and the hook shim it installs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fixture } from '../fixtures-hook/env.js';

const INSTALL = resolve('install.sh');
const roots: string[] = [];

function tempRoot(): string {
  const d = mkdtempSync(join(tmpdir(), 'sev-xform-install-test-'));
  roots.push(d);
  return d;
}

test.after.each(() => {
  while (roots.length) rmSync(roots.pop()!, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function install(destdir: string, args: string[] = [], env: Record<string, string> = {}): Run {
  const r = spawnSync('sh', [INSTALL, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: '/nonexistent', DESTDIR: destdir, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Every path under root with its mode, mtime and content hash: "changes nothing" means this stays equal.
 * Folder mtimes change whenever an entry comes or goes, so uninstall is compared without them.
 */
function snapshot(root: string, folderTimes = true): string[] {
  const out: string[] = [];
  for (const rel of (readdirSync(root, { recursive: true }) as string[]).sort()) {
    const p = join(root, rel);
    const s = statSync(p);
    const hash = s.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16) : 'dir';
    const time = s.isFile() || folderTimes ? s.mtimeMs : '-';
    out.push(`${rel} ${(s.mode & 0o7777).toString(8)} ${time} ${hash}`);
  }
  return out;
}

/** A root with an operator's own qemu hook and an unrelated program already in place. */
function populatedRoot(): string {
  const root = tempRoot();
  mkdirSync(join(root, 'etc/libvirt/hooks'), { recursive: true });
  writeFileSync(join(root, 'etc/libvirt/hooks/qemu'), '#!/bin/sh\n# the operator\'s own hook\nexit 0\n', { mode: 0o750 });
  mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
  writeFileSync(join(root, 'usr/local/bin/other-tool'), 'x', { mode: 0o755 });
  return root;
}

test('install.sh into DESTDIR: binary, hook shim, state folder and manifest', () => {
  const root = tempRoot();
  const r = install(root);
  assert.is(r.code, 0, r.stderr);
  const bin = join(root, 'usr/local/bin/sev-xform');
  const hook = join(root, 'etc/libvirt/hooks/qemu.d/sev-xform');
  assert.ok(readFileSync(bin).equals(readFileSync('dist/sev-xform')), 'the binary is dist/sev-xform');
  assert.is(statSync(bin).mode & 0o777, 0o755);
  assert.is(statSync(hook).mode & 0o777, 0o755);
  assert.ok(readFileSync(hook, 'utf8').includes('\nSEV_XFORM=/usr/local/bin/sev-xform\n'), 'the shim points at the installed binary (without DESTDIR)');
  assert.ok(statSync(join(root, 'var/lib/sev-xform')).isDirectory());
  const manifest = readFileSync(join(root, 'var/lib/sev-xform/install-manifest'), 'utf8');
  assert.ok(manifest.includes('file /usr/local/bin/sev-xform\n') && manifest.includes('file /etc/libvirt/hooks/qemu.d/sev-xform\n'), manifest);
  assert.ok(r.stdout.includes('must restart') || r.stdout.includes('only finds a new hook when it starts'), r.stdout);
  assert.ok(r.stdout.includes('not writing the host cache'), 'with DESTDIR the host cache is left to the target host');
  // The installed binary runs and answers the hook protocol.
  const started = spawnSync(bin, ['hook', 'vm1', 'started', 'begin', '-'], { input: fixture('tagged.xml'), encoding: 'utf8' });
  assert.is(started.status, 0, started.stderr);
});

test('install.sh twice changes nothing; --uninstall removes exactly what it installed; the operator\'s qemu hook is never touched', () => {
  const root = populatedRoot();
  const pristine = snapshot(root, false);
  const first = install(root);
  assert.is(first.code, 0, first.stderr);
  assert.ok(first.stdout.includes('left /etc/libvirt/hooks/qemu as it is'), first.stdout);
  const installed = snapshot(root);
  assert.ok(installed.length > pristine.length);
  const second = install(root);
  assert.is(second.code, 0, second.stderr);
  assert.equal(snapshot(root), installed, 'a second run changes nothing (content, modes, mtimes)');
  assert.ok(second.stdout.includes('is up to date'));
  assert.not.ok(second.stdout.includes('only finds a new hook'), 'no restart needed when the hook did not change');
  const gone = install(root, ['--uninstall']);
  assert.is(gone.code, 0, gone.stderr);
  assert.equal(snapshot(root, false), pristine, 'back to exactly what was there before');
});

test('--uninstall keeps folders that hold files it did not install (apply backups)', () => {
  const root = tempRoot();
  assert.is(install(root).code, 0);
  mkdirSync(join(root, 'var/lib/sev-xform/backup'));
  writeFileSync(join(root, 'var/lib/sev-xform/backup/vm1-20250101T000000Z.xml'), '<domain/>');
  const r = install(root, ['--uninstall']);
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(root, 'var/lib/sev-xform/backup/vm1-20250101T000000Z.xml')));
  assert.not.ok(existsSync(join(root, 'usr/local/bin/sev-xform')));
  assert.not.ok(existsSync(join(root, 'etc/libvirt/hooks/qemu.d')));
  assert.not.ok(existsSync(join(root, 'var/lib/sev-xform/install-manifest')));
  assert.ok(r.stdout.includes('kept /var/lib/sev-xform/'), r.stdout);
});

test('--uninstall without a manifest refuses', () => {
  const root = tempRoot();
  const r = install(root, ['--uninstall']);
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes('no manifest'), r.stderr);
  assert.equal(readdirSync(root), []);
});

test('PREFIX is honoured and written into the shim', () => {
  const root = tempRoot();
  const r = install(root, [], { PREFIX: '/opt/sevx' });
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(root, 'opt/sevx/bin/sev-xform')));
  assert.ok(readFileSync(join(root, 'etc/libvirt/hooks/qemu.d/sev-xform'), 'utf8').includes('\nSEV_XFORM=/opt/sevx/bin/sev-xform\n'));
});

test('bad arguments: unknown option, relative PREFIX, --restart-libvirtd with DESTDIR; nothing is written', () => {
  const root = tempRoot();
  for (const [args, env] of [
    [['--frobnicate'], {}],
    [[], { PREFIX: 'usr/local' }],
    [[], { PREFIX: "/usr/lo'cal" }],
    [['--restart-libvirtd'], {}],
  ] as Array<[string[], Record<string, string>]>) {
    const r = install(root, args, env);
    assert.is(r.code, 2, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assert.equal(readdirSync(root), []);
});

function fakeLibvirt(version: string): string {
  const bin = join(tempRoot(), 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'libvirtd'), `#!/bin/sh\necho "libvirtd (libvirt) ${version}"\n`, { mode: 0o755 });
  return bin;
}

test('libvirt older than 6.5 (no qemu.d): stops with instructions before writing anything', () => {
  const root = tempRoot();
  const r = install(root, ['--check-libvirt'], { PATH: `${fakeLibvirt('6.0.0')}:/usr/bin:/bin` });
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes('libvirt 6.0.0 is older than 6.5') && r.stderr.includes('will not edit /etc/libvirt/hooks/qemu'), r.stderr);
  assert.ok(r.stderr.includes("'/usr/local/bin/sev-xform hook \"$@\"'"), 'says what to call instead');
  assert.equal(readdirSync(root), []);
});

test('libvirt 6.5 and later pass the version check', () => {
  const root = tempRoot();
  const r = install(root, ['--check-libvirt'], { PATH: `${fakeLibvirt('6.5.0')}:/usr/bin:/bin` });
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(root, 'etc/libvirt/hooks/qemu.d/sev-xform')));
});

test('DESTDIR that does not exist yet is created, with its parents', () => {
  const root = join(tempRoot(), 'new/dir');
  const r = install(root);
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(root, 'etc/libvirt/hooks/qemu.d/sev-xform')));
  assert.is(statSync(join(root, '..')).mode & 0o777, 0o755);
  assert.is(install(root, ['--uninstall']).code, 0);
  // --uninstall never creates it.
  const missing = join(tempRoot(), 'missing');
  const gone = install(missing, ['--uninstall']);
  assert.is(gone.code, 1);
  assert.ok(gone.stderr.includes('no manifest'), gone.stderr);
  assert.not.ok(existsSync(missing));
});

test('a symlink in the staging root never makes install.sh write outside it; one at a file it installs is replaced, not followed', () => {
  const outside = tempRoot();
  writeFileSync(join(outside, 'sev-xform'), 'outside');
  const root = tempRoot();
  mkdirSync(join(root, 'etc/libvirt/hooks'), { recursive: true });
  symlinkSync(outside, join(root, 'etc/libvirt/hooks/qemu.d'));
  const r = install(root);
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes(`resolves to ${outside}, outside DESTDIR`), r.stderr);
  assert.equal(readdirSync(outside), ['sev-xform']);
  assert.is(readFileSync(join(outside, 'sev-xform'), 'utf8'), 'outside');

  const second = tempRoot();
  mkdirSync(join(second, 'usr/local/bin'), { recursive: true });
  symlinkSync(join(outside, 'sev-xform'), join(second, 'usr/local/bin/sev-xform'));
  const r2 = install(second);
  assert.is(r2.code, 0, r2.stderr);
  assert.is(readFileSync(join(outside, 'sev-xform'), 'utf8'), 'outside', 'the link target is untouched');
  assert.ok(readFileSync(join(second, 'usr/local/bin/sev-xform')).equals(readFileSync('dist/sev-xform')));
  assert.equal(readdirSync(outside), ['sev-xform']);
  // No staged copy is left beside the files.
  assert.equal(readdirSync(join(second, 'usr/local/bin')), ['sev-xform']);
});

test('a staging folder others can write to, or one owned by another user, is refused before anything is written', () => {
  const root = tempRoot();
  const open = join(root, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  const r = install(join(open, 'stage'));
  assert.is(r.code, 1);
  assert.ok(r.stderr.includes(`${open} (on the way to`) && r.stderr.includes('writable by group or others (mode 777)'), r.stderr);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(readdirSync(open), []);
  if (process.getuid?.() !== 0) return;
  // As root, a DESTDIR another user owns (say one planted in /tmp before the run) is refused.
  const planted = join(root, 'planted');
  mkdirSync(planted);
  chownSync(planted, 65534, 65534);
  const r2 = install(planted);
  assert.is(r2.code, 1);
  assert.ok(r2.stderr.includes(`${planted} (on the way to ${planted}) is owned by uid 65534`), r2.stderr);
  assert.equal(readdirSync(planted), []);
});

// ---- a local attacker against the temporary files (issue 12)

/**
 * A mktemp in front of the real one that plays a local user watching the temporary folder: beside
 * every name it hands out it plants FIFOs (`NAME.hook`, `NAME.manifest`); each swallows what
 * install.sh writes into it, then feeds every later reader the attacker's payload. An install that
 * used those names would copy the attacker's hook and manifest.
 */
function attackerMktemp(payloads: Record<string, string>): { path: string; pids: string; stop: () => void } {
  const dir = tempRoot();
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const pids = join(dir, 'pids');
  const plant = Object.entries(payloads)
    .map(
      ([ext, payload]) => `fifo="$name.${ext}"
mkfifo "$fifo"
( exec </dev/null >/dev/null 2>&1
  while IFS= read -r _; do :; done <"$fifo"
  while [ -p "$fifo" ]; do printf '%s' ${JSON.stringify(payload).replace(/\$/g, '\\$')} >"$fifo"; done ) &
echo $! >>'${pids}'`,
    )
    .join('\n');
  // Only builtins read and write the FIFOs, so killing the subshell ends every blocked open.
  writeFileSync(join(bin, 'mktemp'), `#!/bin/sh\nname=$(/usr/bin/mktemp "$@") || exit\n${plant}\nprintf '%s\\n' "$name"\n`, { mode: 0o755 });
  const stop = (): void => {
    if (!existsSync(pids)) return;
    for (const pid of readFileSync(pids, 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  return { path: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}`, pids, stop };
}

test('a local user with FIFOs beside the temporary files can neither plant the hook nor steer --uninstall', () => {
  const root = tempRoot();
  writeFileSync(join(root, 'victim'), 'not installed by install.sh');
  const tmp = tempRoot();
  const attacker = attackerMktemp({ hook: '#!/bin/sh\n# the attacker\nexit 0\n', manifest: 'file /victim\n' });
  let r: Run;
  try {
    r = install(root, [], { PATH: attacker.path, TMPDIR: tmp });
  } finally {
    attacker.stop();
  }
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(attacker.pids), 'install.sh asked mktemp for its temporary names');
  const expected = readFileSync('hooks/qemu', 'utf8').replace(/^SEV_XFORM=.*$/m, 'SEV_XFORM=/usr/local/bin/sev-xform');
  const hook = readFileSync(join(root, 'etc/libvirt/hooks/qemu.d/sev-xform'), 'utf8');
  assert.ok(hook === expected, `the installed hook is ours, not:\n${hook.slice(0, 200)}`);
  const manifest = readFileSync(join(root, 'var/lib/sev-xform/install-manifest'), 'utf8');
  assert.not.match(manifest, /victim/, manifest);
  // Nothing of install.sh's is left in the temporary folder: only what the attacker planted.
  assert.equal(readdirSync(tmp).filter((f) => !/\.(hook|manifest)$/.test(f)), [], 'the temporary folder is removed');
  const gone = install(root, ['--uninstall']);
  assert.is(gone.code, 0, gone.stderr);
  assert.is(readFileSync(join(root, 'victim'), 'utf8'), 'not installed by install.sh', '--uninstall deleted nothing it did not install');
});

test('--uninstall refuses a manifest that names paths install.sh never creates, and deletes nothing', () => {
  const root = tempRoot();
  assert.is(install(root).code, 0);
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  const manifestPath = join(root, 'var/lib/sev-xform/install-manifest');
  const original = readFileSync(manifestPath, 'utf8');
  // The test rewrites the manifest itself; everything else must stay as it was.
  const others = (): string[] => snapshot(root).filter((e) => !e.startsWith('var/lib/sev-xform/install-manifest '));
  const before = others();
  for (const line of ['file /etc/passwd', 'dir /root', 'file /var/lib/sev-xform/../../../etc/passwd', 'file /usr/local/bin/../../../etc/passwd', 'file relative/bin/sev-xform', 'rmrf /etc', 'file /etc/libvirt/hooks/qemu']) {
    writeFileSync(manifestPath, `${original}${line}\n`);
    const r = install(root, ['--uninstall']);
    assert.is(r.code, 1, `${line}: ${r.stdout}${r.stderr}`);
    assert.ok(r.stderr.includes(`'${line}'`) && r.stderr.includes('nothing was removed'), `${line}: ${r.stderr}`);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    writeFileSync(manifestPath, original);
    assert.equal(others(), before, `${line}: nothing changed`);
  }
  assert.is(install(root, ['--uninstall']).code, 0);
  assert.ok(existsSync(join(root, 'etc/passwd')));
});

// ---- the shim

/** hooks/qemu pointed at `binary`, as install.sh writes it. */
function shimFor(binary: string): string {
  const dir = tempRoot();
  const shim = join(dir, 'sev-xform');
  writeFileSync(shim, readFileSync('hooks/qemu', 'utf8').replace(/^SEV_XFORM=.*$/m, `SEV_XFORM=${binary}`), { mode: 0o755 });
  return shim;
}

function fakeBinary(): { path: string; log: string } {
  const dir = tempRoot();
  const log = join(dir, 'calls');
  const path = join(dir, 'fake-sev-xform');
  writeFileSync(path, `#!/bin/sh\nprintf '%s|' "$@" >>'${log}'\necho >>'${log}'\ncat >>'${log}'\nexit 7\n`);
  chmodSync(path, 0o755);
  return { path, log };
}

function runShim(shim: string, args: string[], input: string): Run {
  const r = spawnSync(shim, args, { input, encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LC_ALL: 'C', HOME: '/' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('shim: prepare, migrate and restore exec the binary with the hook arguments and stdin; its status is the answer', () => {
  const fake = fakeBinary();
  const shim = shimFor(fake.path);
  const xml = fixture('tagged.xml');
  for (const op of ['prepare', 'migrate', 'restore']) {
    rmSync(fake.log, { force: true });
    const r = runShim(shim, ['vm1', op, 'begin', '-'], xml);
    assert.is(r.code, 7, `${op}: the binary's exit status`);
    assert.is(readFileSync(fake.log, 'utf8'), `hook|vm1|${op}|begin|-|\n${xml}`);
  }
});

test('shim: every other operation returns 0 without starting the binary', () => {
  const fake = fakeBinary();
  const shim = shimFor(fake.path);
  for (const [op, sub] of [['start', 'begin'], ['reconnect', 'begin'], ['attach', 'begin']]) {
    const r = runShim(shim, ['vm1', op!, sub!, '-'], fixture('tagged.xml'));
    assert.is(r.code, 0, op);
    assert.is(r.stdout + r.stderr, '');
  }
  assert.not.ok(existsSync(fake.log), 'the binary never ran');
});

test('shim: started, stopped and release of an SEV domain run the binary (to settle its reservation) without stdin, and always answer 0', () => {
  const fake = fakeBinary();
  const shim = shimFor(fake.path);
  for (const [op, sub] of [['started', 'begin'], ['stopped', 'end'], ['release', 'end']]) {
    rmSync(fake.log, { force: true });
    const r = runShim(shim, ['vm1', op!, sub!, '-'], fixture('tagged.xml'));
    assert.is(r.code, 0, `${op}: 0 whatever the binary answers (7 here)`);
    assert.is(readFileSync(fake.log, 'utf8'), `hook|vm1|${op}|${sub}|-|\n`);
    rmSync(fake.log, { force: true });
    assert.is(runShim(shim, ['vm1', op!, sub!, '-'], fixture('plain.xml')).code, 0);
    assert.not.ok(existsSync(fake.log), `${op} of a non-SEV domain: the binary never ran`);
  }
});

test('shim: prepare, migrate and restore of a domain with neither tag nor launchSecurity answer 0 without starting the binary', () => {
  const fake = fakeBinary();
  const shim = shimFor(fake.path);
  for (const op of ['prepare', 'migrate', 'restore']) {
    const r = runShim(shim, ['vm1', op, 'begin', '-'], fixture('plain.xml'));
    assert.is(r.code, 0, op);
    assert.is(r.stdout + r.stderr, '', 'empty stdout: libvirt reads it as "unchanged"');
  }
  assert.not.ok(existsSync(fake.log), 'the binary never ran');
  // launchSecurity alone, without the tag, still goes to the binary.
  assert.is(runShim(shim, ['vm1', 'prepare', 'begin', '-'], fixture('ls-only.xml')).code, 7);
});

test('shim with the binary gone: SEV domains are refused, others pass', () => {
  const shim = shimFor('/nonexistent/sev-xform');
  const refused = runShim(shim, ['vm1', 'prepare', 'begin', '-'], fixture('tagged.xml'));
  assert.is(refused.code, 1);
  assert.ok(refused.stderr.startsWith('sev-xform: refusing to start vm1: /nonexistent/sev-xform is missing'), refused.stderr);
  assert.is(runShim(shim, ['vm1', 'restore', 'begin', '-'], fixture('ls-only.xml')).code, 1);
  const plain = runShim(shim, ['vm1', 'prepare', 'begin', '-'], fixture('plain.xml'));
  assert.is(plain.code, 0);
  assert.is(plain.stdout + plain.stderr, '');
});

test('shim with the real binary: the installed pair refuses an unconverted tagged domain', () => {
  const root = tempRoot();
  assert.is(install(root).code, 0);
  const shim = shimFor(join(root, 'usr/local/bin/sev-xform'));
  const r = spawnSync(shim, ['vm1', 'prepare', 'begin', '-'], {
    input: fixture('tagged.xml'),
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin', SEV_XFORM_STATE_DIR: join(root, 'var/lib/sev-xform') },
  });
  assert.is(r.status, 1);
  // No host cache in the temporary root: the SEV domain is refused, naming the file.
  assert.ok(r.stderr.includes(join(root, 'var/lib/sev-xform/host.json')), r.stderr);
});

test.run();
