// SEV-SNP through the built binary, as an operator runs it: the tag's model,
// --model on the command line (the fast argument path and yargs agree), a fake
// virsh that answers for libvirt 9.0, and the one-line refusals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runBin } from '../support/bin.js';

const SNP_HOST = ['--domcaps', 'fixtures/hosts/snp-genoa-libvirt11.xml', '--firmware-dirs', 'fixtures/hosts/firmware-snp'];
const IN = 'fixtures/snp-model-default-policy/in.xml';
const OUT = readFileSync('fixtures/snp-model-default-policy/out.xml', 'utf8');

test('tag model="sev-snp": the golden output, from a file and from stdin', () => {
  assert.is(runBin([...SNP_HOST, IN]).stdout, OUT);
  const r = runBin(SNP_HOST, { input: readFileSync(IN, 'utf8') });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, OUT);
});

test('--model sev-snp on a plain tag, in both argument forms, gives the same SEV-SNP guest', () => {
  const plain = readFileSync(IN, 'utf8').replace(' model="sev-snp"', '');
  const fast = runBin([...SNP_HOST, '--model', 'sev-snp'], { input: plain });
  const yargs = runBin([...SNP_HOST, '--model=sev-snp'], { input: plain });
  assert.is(fast.code, 0, fast.stderr);
  assert.is(fast.stdout, OUT.replace(' model="sev-snp"', ''));
  assert.is(yargs.stdout, fast.stdout);
  const bad = runBin([...SNP_HOST, '--model', 'snp'], { input: plain });
  assert.is(bad.code, 2);
  assert.is(bad.stdout, '');
});

test('a fake virsh answering as libvirt 9.0: refused in one line naming the version; stdout empty', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-snp-'));
  const caps = resolve('fixtures/hosts/sev-epyc-rome.xml');
  writeFileSync(
    join(dir, 'virsh'),
    `#!/bin/sh\ncase "$1" in\n  domcapabilities) cat '${caps}' ;;\n  version) printf 'Using library: libvirt 9.0.0\\nRunning against daemon: 9.0.0\\n' ;;\n  *) exit 1 ;;\nesac\n`,
  );
  chmodSync(join(dir, 'virsh'), 0o755);
  const r = runBin(['--firmware-dirs', 'fixtures/hosts/firmware-snp', IN], { path: dir });
  rmSync(dir, { recursive: true });
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  assert.is(r.stderr, "sev-xform: host: SEV-SNP needs libvirt >= 10.5 for <launchSecurity type='sev-snp'>, and this host runs libvirt 9.0.0; upgrade libvirt (Debian 13 ships 11.3) or ask for model 'sev' or 'sev-es'\n");
});

test('refusals are one line and exit 1: bit 17 clear, a wrong-size idBlock, no SEV-SNP firmware', () => {
  for (const [name, extra] of [
    ['snp-policy-bit17-clear', []],
    ['snp-blob-idblock-wrong-size', []],
    ['snp-no-firmware', ['--firmware-dirs', 'fixtures/hosts/firmware-debian13']],
  ] as const) {
    const r = runBin([...SNP_HOST, ...extra, `fixtures/${name}/in.xml`]);
    assert.is(r.code, 1, name);
    assert.is(r.stdout, '', name);
    assert.is(r.stderr, readFileSync(`fixtures/${name}/err.txt`, 'utf8'), name);
  }
});

test.run();
