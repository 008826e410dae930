// A broken firmware descriptor folder never passes silently for an SEV domain,
// and never matters for an untagged one.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../support/run-cli.js';

const CAPS = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml'];
const TAGGED = 'fixtures/virt-install-i440fx-bios-virtio-blk/in.xml';
const UNTAGGED = 'fixtures/untagged-i440fx-passthrough/in.xml';

function folder(files: Record<string, string | null>): string {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-fw-'));
  for (const [name, content] of Object.entries(files)) {
    if (content === null) copyFileSync(`fixtures/hosts/firmware-sev/${name}`, join(dir, name));
    else writeFileSync(join(dir, name), content);
  }
  return dir;
}

test('a corrupt descriptor beside a good amd-sev one: converted, with a warning naming it', async () => {
  const dir = folder({ '60-edk2-x86_64.json': null, '70-broken.json': '{ "interface-types": [' });
  const r = await runCli([...CAPS, '--firmware-dirs', dir, TAGGED]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`warning: firmware descriptor\\(s\\) ${dir}/70-broken\\.json cannot be read`));
  rmSync(dir, { recursive: true });
});

test('only a corrupt descriptor: refused, naming the file', async () => {
  const dir = folder({ '60-edk2-x86_64.json': '{ not json' });
  const r = await runCli([...CAPS, '--firmware-dirs', dir, TAGGED]);
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  assert.match(r.stderr, new RegExp(`${dir}/60-edk2-x86_64\\.json cannot be read or is not JSON`));
  assert.is(r.stderr.trim().split('\n').length, 1);
  rmSync(dir, { recursive: true });
});

test('descriptors without amd-sev: refused; a missing folder: converted with a warning that nothing was confirmed', async () => {
  const dir = folder({ '60-plain.json': JSON.stringify({ 'interface-types': ['uefi'], features: ['acpi-s3'], targets: [{ architecture: 'x86_64', machines: ['pc-q35-*'] }] }) });
  const none = await runCli([...CAPS, '--firmware-dirs', dir, TAGGED]);
  assert.is(none.code, 1);
  assert.match(none.stderr, /lists 'amd-sev'/);
  const missing = await runCli([...CAPS, '--firmware-dirs', join(dir, 'nope'), TAGGED]);
  assert.is(missing.code, 0, missing.stderr);
  assert.match(missing.stderr, /warning: no firmware descriptors found in .*nope: cannot confirm/);
  rmSync(dir, { recursive: true });
});

test('an untagged domain never reads the firmware folder', async () => {
  const dir = folder({ '60-edk2-x86_64.json': '{ not json' });
  const r = await runCli(['--firmware-dirs', dir, UNTAGGED]);
  assert.is(r.code, 0);
  assert.is(r.stderr, '');
  rmSync(dir, { recursive: true });
});

test.run();
