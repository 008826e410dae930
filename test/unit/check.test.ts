// `sev-xform check`: the rules' own verdict on a domain, without changing it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { runCli } from '../support/run-cli.js';
import { goldenCases } from '../support/fixtures.js';

const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];

test('every golden output converted on the default host is a correct SEV guest', async () => {
  let checked = 0;
  for (const name of goldenCases()) {
    const dir = `fixtures/${name}`;
    if (!existsSync(`${dir}/out.xml`) || existsSync(`${dir}/args.json`)) continue;
    const out = readFileSync(`${dir}/out.xml`, 'utf8');
    if (out === readFileSync(`${dir}/in.xml`, 'utf8') && !out.includes('<launchSecurity')) continue;
    const r = await runCli(['check', ...HOST, `${dir}/out.xml`]);
    assert.is(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    assert.is(r.stdout, 'a correct SEV guest\n');
    checked++;
  }
  assert.ok(checked > 30, `only ${checked} outputs checked`);
});

test('a tagged, unconverted domain: one line per broken rule, exit 1', async () => {
  const r = await runCli(['check', ...HOST, 'fixtures/virt-install-i440fx-bios-virtio-blk/in.xml']);
  assert.is(r.code, 1);
  const lines = r.stdout.trim().split('\n');
  assert.ok(lines.length > 5);
  for (const rule of ['launch-security', 'machine-q35', 'firmware-uefi', 'boot-disk-to-virtio-scsi', 'virtio-iommu', 'memory-pinning', 'sev-hygiene'])
    assert.ok(lines.some((l) => l.startsWith(`${rule}: needs change: `)), `no ${rule} line in:\n${r.stdout}`);
  assert.is(r.stderr, '');
});

test('a domain the rules refuse is reported as one problem, exit 1', async () => {
  const r = await runCli(['check', ...HOST, 'fixtures/refuse-pci-hostdev/in.xml']);
  assert.is(r.code, 1);
  assert.match(r.stdout, /^refused: domain\/devices\/hostdev\[1\]: pci passthrough/);
});

test('an untagged domain without launchSecurity is not an SEV domain: exit 0', async () => {
  const r = await runCli(['check', ...HOST, 'fixtures/untagged-i440fx-passthrough/in.xml']);
  assert.is(r.code, 0);
  assert.match(r.stdout, /^not an SEV domain/);
});

test('launchSecurity without the tag is checked too', async () => {
  const input = readFileSync('fixtures/nova-sev-already-correct/in.xml', 'utf8');
  assert.not.match(input, /urn:sev-xform/);
  assert.is((await runCli(['check', ...HOST, '-'], { stdin: input })).code, 0);
  const broken = input.replace(/ iommu="on"/, '');
  const r = await runCli(['check', ...HOST, '-'], { stdin: broken });
  assert.is(r.code, 1);
  assert.match(r.stdout, /virtio-iommu: needs change/);
});

test.run();
