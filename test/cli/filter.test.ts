// The filter as an operator runs it: the built binary, stdin/stdout, exit codes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BIN, runBin } from '../support/bin.js';

const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];
const TAGGED = 'examples/domain.xml';
const tagged = readFileSync(TAGGED, 'utf8');
const untagged = tagged.replace(/\s*<sev:sev [^>]*\/>/, '');

function oneLine(stderr: string): void {
  assert.is(stderr.trim().split('\n').length, 1, `expected one stderr line, got:\n${stderr}`);
  assert.not.match(stderr, /^\s+at /m, 'no stack trace');
}

test('a tagged domain on stdin becomes an SEV guest on stdout', () => {
  const r = runBin(HOST, { input: tagged });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /<launchSecurity type='sev'>/);
  assert.ok(r.stdout.startsWith('<domain'), 'stdout is only XML');
  for (const line of r.stderr.trim().split('\n').filter(Boolean)) assert.match(line, /^sev-xform: warning: /);
});

test('an untagged domain comes back byte for byte, from stdin and from a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-'));
  const file = join(dir, 'd.xml');
  writeFileSync(file, untagged);
  assert.is(runBin(HOST, { input: untagged }).stdout, untagged);
  assert.is(runBin([...HOST, file]).stdout, untagged);
  rmSync(dir, { recursive: true });
});

test('--diff prints a unified diff and --explain one line per change', () => {
  const r = runBin([...HOST, '--diff', '--explain', TAGGED]);
  assert.is(r.code, 0);
  assert.match(r.stdout, /^-{3} a\/examples\/domain\.xml/m);
  assert.match(r.stdout, /^\+  <launchSecurity type='sev'>/m);
  assert.match(r.stderr, /^sev-xform: launch-security: added <launchSecurity/m);
  assert.match(r.stderr, /^sev-xform: machine-q35: /m);
});

test('usage errors exit 2 with one line', () => {
  for (const args of [['--bogus'], ['--memory-pinning', 'sometimes'], ['--firmware', 'relative/OVMF.fd', TAGGED]]) {
    const r = runBin([...HOST, ...args], { input: tagged });
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stdout, '');
    oneLine(r.stderr);
  }
});

test('a missing input file exits 1 naming it', () => {
  const r = runBin([...HOST, '/nonexistent/d.xml']);
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  oneLine(r.stderr);
  assert.match(r.stderr, /\/nonexistent\/d\.xml/);
});

test('a refusal exits 1 with one line naming the element, and prints nothing', () => {
  const r = runBin(HOST, { input: tagged.replace("machine='pc-i440fx-7.2'", "machine='isapc'") });
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  oneLine(r.stderr);
  assert.match(r.stderr, /refused: domain\/os\/type: machine 'isapc'/);
});

test('the single binary runs with no Node on PATH and ignores NODE_OPTIONS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-evil-'));
  const evil = join(dir, 'evil.cjs');
  writeFileSync(evil, `require('fs').writeFileSync(${JSON.stringify(join(dir, 'ran'))}, 'x');`);
  const r = spawnSync(BIN, [...HOST, TAGGED], { env: { PATH: '/nonexistent', NODE_OPTIONS: `--require ${evil}` }, encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /<launchSecurity type='sev'>/);
  assert.not.ok(existsSync(join(dir, 'ran')), 'NODE_OPTIONS injected code into the binary');
  rmSync(dir, { recursive: true });
});

test('the single binary starts from its V8 code cache on the filter, hook and yargs paths', () => {
  // V8 quietly compiles from source when it rejects a cache; only the loader's trace line tells.
  const env = { PATH: '/nonexistent', SEV_XFORM_TRACE_CODE_CACHE: '1' };
  for (const argv of [[...HOST, TAGGED], ['hook', 'vm', 'started', 'begin', '-'], ['--help']]) {
    const r = spawnSync(BIN, argv, { env, encoding: 'utf8', input: '' });
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stderr.split('\n')[0], 'sev-xform: code cache accepted', argv.join(' '));
  }
  // Without the variable the line never appears: libvirt logs the hook's stderr.
  const quiet = spawnSync(BIN, ['hook', 'vm', 'started', 'begin', '-'], { env: { PATH: '/nonexistent' }, encoding: 'utf8', input: '' });
  assert.is(quiet.stderr, '');
});

test('--help prints usage on stdout and exits 0', () => {
  const r = runBin(['--help']);
  assert.is(r.code, 0);
  assert.match(r.stdout, /--domcaps/);
  assert.is(r.stderr, '');
});

function fakeVirsh(script: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-virsh-'));
  writeFileSync(join(dir, 'virsh'), `#!/bin/sh\n${script}\n`);
  chmodSync(join(dir, 'virsh'), 0o755);
  return dir;
}

test('without --domcaps the filter asks virsh for the host capabilities', () => {
  const caps = resolve('fixtures/hosts/sev-epyc-rome.xml');
  const dir = fakeVirsh(`[ "$*" = "domcapabilities --arch x86_64 --machine q35" ] || exit 3\ncat '${caps}'`);
  const r = runBin(['--firmware-dirs', 'fixtures/hosts/firmware-sev'], { input: tagged, path: dir });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /<cbitpos>47<\/cbitpos>/);
  rmSync(dir, { recursive: true });
});

test('when virsh fails the message says to pass --domcaps', () => {
  const dir = fakeVirsh('echo "error: failed to connect to the hypervisor" >&2; exit 1');
  const r = runBin(['--firmware-dirs', 'fixtures/hosts/firmware-sev'], { input: tagged, path: dir });
  assert.is(r.code, 1);
  oneLine(r.stderr);
  assert.match(r.stderr, /failed to connect to the hypervisor.*--domcaps/);
  rmSync(dir, { recursive: true });
});

test('untagged input never needs the host: no virsh, no domcaps', () => {
  const dir = fakeVirsh('exit 99');
  const r = runBin([], { input: untagged, path: dir });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, untagged);
  rmSync(dir, { recursive: true });
});

test('batch: many files in one process into --output-dir; a bad file is reported and the rest converted', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-batch-'));
  const bad = join(dir, 'bad.xml');
  writeFileSync(bad, '<domain>');
  const out = join(dir, 'out');
  const r = runBin([...HOST, '--output-dir', out, TAGGED, bad, 'fixtures/untagged-i440fx-passthrough/in.xml']);
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  assert.match(r.stderr, /bad input: .*\(.*bad\.xml\)$/m);
  assert.match(readFileSync(join(out, 'domain.xml'), 'utf8'), /<launchSecurity type='sev'>/);
  assert.is(readFileSync(join(out, 'in.xml'), 'utf8'), readFileSync('fixtures/untagged-i440fx-passthrough/in.xml', 'utf8'));
  rmSync(dir, { recursive: true });
});

test('several files without --output-dir is a usage error', () => {
  const r = runBin([...HOST, TAGGED, TAGGED]);
  assert.is(r.code, 2);
  oneLine(r.stderr);
});

test.run();
