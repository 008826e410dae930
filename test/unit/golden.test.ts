// Golden cases, as in libvirt's qemuxmlconftest: fixtures/<case>/in.xml with
// out.xml (and warnings.txt when the run warns) or err.txt for a refusal, and
// optional args.json. Every converted output is run again and must come back
// unchanged. SEV_XFORM_REGEN=1 rewrites the goldens (review the diff); never in CI.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../support/run-cli.js';
import { FIXTURES, goldenCases } from '../support/fixtures.js';

const DEFAULT_HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];
const regen = process.env['SEV_XFORM_REGEN'] === '1';
if (regen && process.env['CI']) throw new Error('SEV_XFORM_REGEN is refused in CI: goldens are reviewed, never regenerated silently');

function caseArgs(dir: string): string[] {
  const file = join(dir, 'args.json');
  const extra: string[] = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as string[]) : [];
  const host = DEFAULT_HOST.filter((a, i, all) => {
    const flag = a.startsWith('--') ? a : all[i - 1]!;
    return !extra.includes(flag);
  });
  return [...host, ...extra];
}

function readIf(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
}

function writeOrRemove(path: string, content: string | undefined): void {
  if (content === undefined || content === '') rmSync(path, { force: true });
  else writeFileSync(path, content);
}

for (const name of goldenCases()) {
  test(`golden ${name}`, async () => {
    const dir = join(FIXTURES, name);
    const input = readFileSync(join(dir, 'in.xml'), 'utf8');
    const args = caseArgs(dir);
    const first = await runCli([...args, join(dir, 'in.xml')]);
    if (regen) {
      writeOrRemove(join(dir, 'out.xml'), first.code === 0 ? first.stdout : undefined);
      writeOrRemove(join(dir, 'warnings.txt'), first.code === 0 ? first.stderr : undefined);
      writeOrRemove(join(dir, 'err.txt'), first.code !== 0 ? first.stderr : undefined);
    }
    const err = readIf(join(dir, 'err.txt'));
    if (err !== undefined) {
      assert.is(first.code, 1, `exit code; stderr: ${first.stderr}`);
      assert.is(first.stdout, '', 'stdout stays empty on refusal');
      assert.is(first.stderr, err);
      assert.is(first.stderr.trim().split('\n').length, 1, 'a refusal is one stderr line');
      return;
    }
    const expected = readIf(join(dir, 'out.xml'));
    assert.ok(expected !== undefined, `${dir} has neither out.xml nor err.txt (run npm run regen)`);
    assert.is(first.code, 0, `exit code; stderr: ${first.stderr}`);
    assert.fixture(first.stdout, expected!);
    assert.is(first.stderr, readIf(join(dir, 'warnings.txt')) ?? '', 'warnings');
    // Fixed point: a second run over the output changes nothing.
    const second = await runCli([...args, '--explain', '-'], { stdin: first.stdout });
    assert.is(second.code, 0, second.stderr);
    assert.fixture(second.stdout, first.stdout);
    assert.not.match(second.stderr, /^sev-xform: (?!warning: )[a-z0-9-]+: /m, `second run reported changes:\n${second.stderr}`);
    if (first.stdout === input) assert.ok(true);
  });
}

test.run();
