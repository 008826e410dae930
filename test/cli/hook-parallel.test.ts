// libvirt starts domains concurrently, and the hook runs for each: 20 hook
// processes at once must answer exactly as they do one at a time, and leave
// nothing behind but their reservations. Each call has its own lock folder, so
// that an accepted prepare's reservation does not change the others' answers
// (hook-attacks.test.ts tests the reservations between concurrent prepares).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../support/bin.js';
import { convert, domcaps, fixture, makeHookEnv, removeHookEnv, renamed, uuidN } from '../fixtures-hook/env.js';

interface Answer {
  code: number | null;
  stdout: string;
  stderr: string;
}

const tagged = fixture('tagged.xml');
const taggedEs = fixture('tagged-es.xml');
const converted = convert(tagged);
const convertedEs = convert(taggedEs);
const plain = fixture('plain.xml');
const lsOnly = fixture('ls-only.xml');

// Three SEV guests run; the host has 4 SEV slots and 1 SEV-ES slot, which one runs.
const env = makeHookEnv({
  domcaps: domcaps(4, 1),
  running: [
    renamed(converted, 'run1', uuidN(901)),
    renamed(converted, 'run2', uuidN(902)),
    renamed(converted, 'run3', uuidN(903)),
    renamed(convertedEs, 'run-es', uuidN(904)),
  ],
});
const childTmp = mkdtempSync(join(tmpdir(), 'sev-xform-hook-parallel-tmp-'));
const childEnv = { ...env.env, PATH: '/usr/bin:/bin', LC_ALL: 'C', TMPDIR: childTmp };
const lockDirs = mkdtempSync(join(tmpdir(), 'sev-xform-hook-parallel-locks-'));
let lockDirCount = 0;
/** A fresh lock folder for each call (created by the hook). */
function envOfCall(): Record<string, string> {
  return { ...childEnv, SEV_XFORM_LOCK_DIR: join(lockDirs, String(lockDirCount++)) };
}

/** 20 calls on different domains: accepted, refused as unconverted, refused for slots, migrate and restore. */
const CALLS: Array<{ args: string[]; input: string }> = [];
const sources: Array<[string, string]> = [
  ['plain', plain],
  ['tagged', tagged],
  ['converted', converted],
  ['converted-es', convertedEs],
  ['ls-only', lsOnly],
];
for (let i = 0; i < 20; i++) {
  const [kind, xml] = sources[i % sources.length]!;
  const name = `${kind}-${i}`;
  const op = i % 7 === 6 ? 'migrate' : i % 10 === 9 ? 'restore' : 'prepare';
  CALLS.push({ args: ['hook', name, op, 'begin', '-'], input: renamed(xml, name, uuidN(i)).xml });
}

function sequential(call: (typeof CALLS)[number]): Answer {
  const r = spawnSync(BIN, call.args, { input: call.input, encoding: 'utf8', env: envOfCall() });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function concurrent(call: (typeof CALLS)[number]): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, call.args, { env: envOfCall() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(call.input);
  });
}

function snapshot(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const s = statSync(join(dir, name));
    out.push(`${name} ${s.size} ${s.mtimeMs}`);
  }
  return out.sort();
}

test('20 hook calls in parallel give the answers they give one at a time, and leave no files', async () => {
  const before = snapshot(env.root);
  const one = CALLS.map(sequential);
  // The mix must exercise acceptance and each kind of refusal, or the comparison proves little.
  assert.ok(one.some((a) => a.code === 0));
  assert.ok(one.some((a) => a.stderr.includes('unencrypted')));
  assert.ok(one.some((a) => a.stderr.includes('guest slot(s)')));
  assert.ok(one.some((a) => a.stderr.includes('refusing to migrate')));
  assert.ok(one.some((a) => a.stderr.includes('refusing to restore')));
  const all = await Promise.all(CALLS.map(concurrent));
  for (let i = 0; i < CALLS.length; i++) assert.equal(all[i], one[i], `call ${i}: ${CALLS[i]!.args.join(' ')}`);
  assert.equal(snapshot(env.root), before, 'state, run and config folders unchanged');
  assert.equal(readdirSync(childTmp), [], 'no temporary files');
});

test.after(() => {
  removeHookEnv(env);
  rmSync(childTmp, { recursive: true, force: true });
  rmSync(lockDirs, { recursive: true, force: true });
});

test.run();
