// `sev-xform check`: the rules' own verdict on a domain, without changing it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    // No hook.conf: the outputs were converted with the default QEMU overhead.
    const r = await runCli(['check', ...HOST, `${dir}/out.xml`], { env: { HOME: '/nonexistent', SEV_XFORM_HOOK_CONF: '/nonexistent/hook.conf' } });
    assert.is(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    assert.is(r.stdout, 'a correct SEV guest\n');
    checked++;
  }
  assert.ok(checked > 30, `only ${checked} outputs checked`);
});

test('every SEV-SNP golden output is a correct guest on its own host, without --model or --firmware', async () => {
  let checked = 0;
  for (const name of goldenCases().filter((n) => n.startsWith('snp-'))) {
    const dir = `fixtures/${name}`;
    if (!existsSync(`${dir}/out.xml`)) continue;
    const args = JSON.parse(readFileSync(`${dir}/args.json`, 'utf8')) as string[];
    // Only the host description: the output alone must say it is SEV-SNP and which firmware it boots.
    const host = args.flatMap((a, i) => (['--domcaps', '--firmware-dirs'].includes(a) ? [a, args[i + 1]!] : []));
    const r = await runCli(['check', ...host, `${dir}/out.xml`]);
    assert.is(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    assert.match(readFileSync(`${dir}/out.xml`, 'utf8'), /<launchSecurity type='sev-snp'/);
    checked++;
  }
  assert.ok(checked >= 8, `only ${checked} SEV-SNP outputs checked`);
});

test('an unconverted SEV-SNP-tagged domain: launch-security and firmware-uefi need changes; on libvirt 9.0 it is a host problem', async () => {
  const snpHost = ['--domcaps', 'fixtures/hosts/snp-genoa-libvirt11.xml', '--firmware-dirs', 'fixtures/hosts/firmware-snp'];
  const r = await runCli(['check', ...snpHost, 'fixtures/snp-model-default-policy/in.xml']);
  assert.is(r.code, 1);
  assert.match(r.stdout, /^launch-security: needs change: added <launchSecurity type='sev-snp'> with policy 0x00030000/m);
  assert.match(r.stdout, /^firmware-uefi: needs change: removed <nvram>/m);
  const old = await runCli(['check', ...HOST, 'fixtures/snp-model-default-policy/in.xml']);
  assert.is(old.code, 1);
  assert.match(old.stdout, /^host: SEV-SNP needs libvirt >= 10\.5/);
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

test("check counts QEMU's overhead as the hook does: qemu_overhead_mib in hook.conf, or --qemu-overhead", async () => {
  // A 2 GiB guest converted with --qemu-overhead 128MiB: hard_limit 2064 + 128 + 8 (page tables, RAM/256) MiB.
  const golden = readFileSync('fixtures/memory-qemu-overhead-arg/out.xml', 'utf8');
  const xml = golden.replace(`<hard_limit unit='KiB'>${(2064 + 512 + 8) * 1024}<`, `<hard_limit unit='KiB'>${(2064 + 128 + 8) * 1024}<`);
  assert.ok(xml !== golden);
  const none = { SEV_XFORM_HOOK_CONF: '/nonexistent/hook.conf' };
  const byDefault = await runCli(['check', ...HOST, '-'], { stdin: xml, env: none });
  assert.is(byDefault.code, 1);
  assert.match(byDefault.stdout, /^memory-pinning: needs change: raised <memtune><hard_limit>/);
  assert.is((await runCli(['check', ...HOST, '--qemu-overhead', '128MiB', '-'], { stdin: xml, env: none })).stdout, 'a correct SEV guest\n');
  const dir = mkdtempSync(join(tmpdir(), 'sev-xform-check-test-'));
  try {
    writeFileSync(join(dir, 'hook.conf'), 'qemu_overhead_mib = 128\n');
    const r = await runCli(['check', ...HOST, '-'], { stdin: xml, env: { SEV_XFORM_HOOK_CONF: join(dir, 'hook.conf') } });
    assert.is(r.stdout, 'a correct SEV guest\n', r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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

test('a converted guest whose <emulator> is then pointed at a wrapper is refused, naming it (the hook uses this check)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-check-emulator-'));
  try {
    const out = readFileSync('fixtures/virt-install-q35-virtio-scsi-boot/out.xml', 'utf8');
    assert.match(out, /<emulator>\/usr\/bin\/qemu-system-x86_64<\/emulator>/);
    const ok = await runCli(['check', ...HOST, 'fixtures/virt-install-q35-virtio-scsi-boot/out.xml']);
    assert.is(ok.code, 0, ok.stdout + ok.stderr);
    const file = join(dir, 'wrapped.xml');
    writeFileSync(file, out.replace('/usr/bin/qemu-system-x86_64', '/usr/bin/kvm'));
    const r = await runCli(['check', ...HOST, file]);
    assert.is(r.code, 1);
    assert.match(r.stdout, /^refused: domain\/devices\/emulator: '\/usr\/bin\/kvm' is not the QEMU whose SEV support/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
