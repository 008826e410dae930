// On every stack: domains that virt-install generates right now for its daemon, for a matrix of
// OS variants, machines, buses and devices: tagged, converted by the built
// dist/sev-xform against this host's domcapabilities and firmware, and then
// held to the same checks as the golden outputs (schema, define, QEMU argv).
// Nothing is stored: virt-install --print-xml --dry-run with disks on
// /dev/null creates no pool, volume or file (test/integration/host/README.md).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/bin.js';
import {
  TAG,
  addTag,
  defineAndRender,
  describeCommand,
  integrationStacks,
  libvirtCopy,
  parseXml,
  renderProblems,
  requirePrerequisites,
  sevExpectation,
  validateSchema,
  virsh,
  virshOk,
  type El,
  type Stack,
} from '../support/libvirt.js';

interface Variant {
  id: string;
  args: string[];
  /** The osinfo id the variant needs; it is skipped with a reason when this osinfo-db lacks it. */
  osinfo?: string;
  /** asks for SEV-SNP itself (`--launchSecurity sev-snp`, which virt-install writes bare) */
  snp?: boolean;
}

/**
 * Where the SNP variant's stateless firmware would be: Debian ships no AmdSev
 * build, so the filter is told a path (libvirt defines and renders it without
 * opening the file).
 */
const SNP_FIRMWARE = '/usr/share/OVMF/OVMF.amdsev.fd';

const NIC = ['--network', 'network=default'];
const DISK = (opts: string): string[] => ['--disk', `path=/dev/null,${opts}`];

const VARIANTS: Variant[] = [
  { id: 'linux2022-virtio-blk-headless', args: ['--osinfo', 'linux2022', '--boot', 'hd', ...DISK('bus=virtio'), ...NIC, '--graphics', 'none'] },
  {
    id: 'linux2022-uefi-scsi-sata-cdrom-spice-tpm',
    args: ['--osinfo', 'linux2022', '--boot', 'uefi', ...DISK('bus=scsi'), ...DISK('device=cdrom,bus=sata'), ...NIC, '--graphics', 'spice', '--tpm', 'emulator'],
  },
  { id: 'linux2022-sata-e1000e-vnc', args: ['--osinfo', 'linux2022', '--boot', 'hd', ...DISK('bus=sata'), '--network', 'network=default,model=e1000e', '--graphics', 'vnc'] },
  {
    id: 'linux2022-uefi-many-virtio',
    args: [
      '--osinfo', 'linux2022', '--boot', 'uefi',
      ...DISK('bus=virtio'), ...DISK('bus=virtio'), ...DISK('bus=scsi'),
      ...NIC, '--network', 'network=default,model=e1000e',
      '--graphics', 'vnc', '--video', 'virtio', '--input', 'keyboard,bus=virtio', '--input', 'tablet,bus=virtio', '--rng', '/dev/urandom',
    ],
  },
  {
    id: 'linux2022-uefi-virtiofs-vsock-no-disk',
    args: [
      '--osinfo', 'linux2022', '--boot', 'uefi', ...NIC, '--graphics', 'none',
      '--memorybacking', 'source.type=memfd,access.mode=shared', '--filesystem', '/tmp,hostshare,driver.type=virtiofs', '--vsock', 'cid.auto=yes',
    ],
  },
  { id: 'linux2022-scsi-cdrom-only-no-nic', args: ['--osinfo', 'linux2022', '--boot', 'hd', ...DISK('device=cdrom,bus=scsi'), '--network', 'none', '--graphics', 'none'] },
  {
    id: 'i440fx-bios-ide-e1000-vnc',
    args: ['--osinfo', 'linux2022', '--machine', 'pc', '--boot', 'hd', ...DISK('bus=ide'), ...DISK('device=cdrom,bus=ide'), '--network', 'network=default,model=e1000', '--graphics', 'vnc'],
  },
  {
    id: 'i440fx-bios-virtio-blk-agent',
    args: ['--osinfo', 'linux2022', '--machine', 'pc', '--boot', 'hd', ...DISK('bus=virtio'), ...NIC, '--graphics', 'none', '--channel', 'unix,target.type=virtio,name=org.qemu.guest_agent.0'],
  },
  {
    // Both stacks' virt-install write a bare <launchSecurity type="sev-snp"/> (no policy, no stateless firmware).
    id: 'linux2022-uefi-launchsecurity-sev-snp',
    snp: true,
    args: ['--osinfo', 'linux2022', '--boot', 'uefi', ...DISK('bus=scsi'), ...NIC, '--graphics', 'none', '--launchSecurity', 'sev-snp'],
  },
  { id: 'win10-sata-cdrom-vnc', osinfo: 'win10', args: ['--osinfo', 'win10', '--boot', 'hd', ...DISK('bus=sata'), ...DISK('device=cdrom,bus=sata'), ...NIC, '--graphics', 'vnc'] },
  { id: 'win10-uefi-virtio-blk-spice', osinfo: 'win10', args: ['--osinfo', 'win10', '--boot', 'uefi', ...DISK('bus=virtio'), ...NIC, '--graphics', 'spice'] },
  { id: 'win11-virtio-blk-tpm-spice', osinfo: 'win11', args: ['--osinfo', 'win11', '--boot', 'uefi', ...DISK('bus=virtio'), ...DISK('device=cdrom,bus=sata'), ...NIC, '--graphics', 'spice'] },
];

const osinfoIds = new Map<string, Set<string>>();
/** Whether the stack's osinfo-db knows the id (`virt-install --osinfo list` prints one id, or several aliases, per line). */
function knownOsinfo(stack: Stack, id: string): boolean {
  let ids = osinfoIds.get(stack.name);
  if (!ids) {
    const r = stack.virtInstall(['--osinfo', 'list']);
    if (r.code !== 0) throw new Error(`[${stack.name}] virt-install --osinfo list: ${r.stderr.trim()}`);
    ids = new Set(r.stdout.split(/[\s,]+/).filter(Boolean));
    osinfoIds.set(stack.name, ids);
  }
  return ids.has(id);
}

const stacks = integrationStacks('virt-install.test.ts');
const work = mkdtempSync(join(tmpdir(), 'sevx-test-virt-install-'));

// virt-install is each stack's own (Debian 12's virtinst 4.1 on the host, Debian
// 13's 5.0 in the chroot), generating for that stack's daemon: it fits the domain
// to the daemon's domcapabilities, with the defaults of its own version.
for (const stack of stacks) {
  const domcapsFile = join(work, `${stack.name}-domcaps.xml`);
  let domcaps: El | undefined;

  test(stack.label('prerequisites: virt-install, libvirtd with SEV, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
    const version = stack.virtInstall(['--version']);
    assert.is(version.code, 0, `[${stack.name}] virt-install --version: ${version.stderr}`);
    console.log(`virt-install[${stack.name}]: virt-install ${version.stdout.trim()}`);
    const caps = virshOk(['domcapabilities', '--machine', 'q35'], undefined, stack);
    writeFileSync(domcapsFile, caps);
    domcaps = parseXml(caps);
    assert.is(domcaps.child('features')?.child('sev')?.attrs['supported'], 'yes', 'domcapabilities must report <sev supported="yes">');
  });

  for (const v of VARIANTS) {
    test(stack.label(`virt-install ${v.id}`), () => {
      assert.ok(domcaps, 'domcapabilities were not read (see the prerequisites test)');
      if (v.osinfo !== undefined && !knownOsinfo(stack, v.osinfo)) {
        console.log(`virt-install ${v.id}: osinfo-db here does not know ${v.osinfo}; variant not run`);
        return;
      }
      const name = `sevx-test-vi-${v.id}`;
      const pools = virsh(['pool-list', '--all', '--name'], undefined, stack);
      assert.is(pools.code, 0, `virsh pool-list: ${pools.stderr}`);
      const gen = stack.virtInstall(['--print-xml', '--dry-run', '--name', name, '--memory', '2048', '--vcpus', '2', '--noautoconsole', '--disk', 'none', ...v.args]);
      assert.is(gen.code, 0, `virt-install: ${gen.stderr}`);
      assert.is(virsh(['pool-list', '--all', '--name'], undefined, stack).stdout, pools.stdout, 'virt-install --dry-run created a storage pool');

      const tagged = addTag(gen.stdout);
      assert.ok(tagged.includes(TAG), 'the tag went in');
      const input = join(work, `${stack.name}-${name}.in.xml`);
      writeFileSync(input, tagged);
      const host = ['--domcaps', domcapsFile, '--firmware-dirs', stack.firmwareDirs.join(',')];
      if (v.snp) {
        assert.match(gen.stdout, /<launchSecurity type="sev-snp"\/>/, 'virt-install wrote a bare sev-snp launchSecurity');
        const plain = runBin([...host, input]);
        assert.is(plain.code, 1, `an SNP request on ${stack.name} must be refused without an SNP firmware or libvirt: ${plain.stderr}`);
        if (!stack.libvirtAtLeast('10.5.0')) {
          // Older libvirt has no SNP at all: refused naming the version, whatever firmware is offered.
          const withFirmware = runBin([...host, '--firmware', SNP_FIRMWARE, input]);
          assert.is(withFirmware.code, 1, withFirmware.stderr);
          for (const r of [plain, withFirmware]) assert.match(r.stderr, /SEV-SNP needs libvirt >= 10\.5/, r.stderr);
          console.log(`virt-install[${stack.name}] ${v.id}: refused as it must be on libvirt ${stack.versions().libvirt}: ${plain.stderr.split('\n')[0]}`);
          return;
        }
        // No descriptor on Debian offers amd-sev-snp: the refusal says what to install or pass.
        assert.match(plain.stderr, /--firmware PATH/, plain.stderr);
        host.push('--firmware', SNP_FIRMWARE);
      }
      const conv = runBin([...host, input]);
      assert.is(conv.code, 0, `dist/sev-xform refused virt-install's ${v.id}: ${conv.stderr}`);
      for (const line of conv.stderr.split('\n').filter(Boolean)) assert.match(line, /^sev-xform: warning: /, 'stderr carries only warnings');
      const output = join(work, `${stack.name}-${name}.xml`);
      writeFileSync(output, conv.stdout);

      const schema = validateSchema(output, stack);
      assert.ok(schema.code === 0, `virt-xml-validate: ${schema.stderr}${schema.stdout}`);

      const copy = join(work, `${stack.name}-${name}.define.xml`);
      libvirtCopy(output, name, copy);
      const domain = parseXml(readFileSync(copy, 'utf8'));
      const sev = sevExpectation(domain, domcaps!);
      assert.ok(sev, 'the converted domain has launchSecurity');
      const r = defineAndRender(copy, name, domain, stack);
      const problems = renderProblems(domain, r.defined, r.cmd, sev);
      assert.ok(problems.length === 0, `${v.id}:\n  ${problems.join('\n  ')}\n${describeCommand(r.cmd)}`);
    });
  }
}

test.after(() => rmSync(work, { recursive: true, force: true }));
if (stacks.length > 0) test.run();
else rmSync(work, { recursive: true, force: true });
