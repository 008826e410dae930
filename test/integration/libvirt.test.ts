// On every stack (test/support/stack.ts): every golden output is accepted by
// the real libvirtd (virsh define), and the
// QEMU command line libvirt renders for it (domxml-to-native) is an SEV guest:
// sev-guest object matching launchSecurity, confidential-guest-support, boot
// disk on virtio-scsi, iommu_platform on every virtio device.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/bin.js';
import {
  TAG,
  caseFirmwareDirs,
  caseWantsSev,
  defineAndRender,
  caseSkip,
  describeCommand,
  integrationStacks,
  libvirtCases,
  libvirtCopy,
  overlayFirmware,
  parseXml,
  renderProblems,
  requirePrerequisites,
  sevExpectation,
  stackDomcaps,
  validateSchema,
  virshOk,
  type El,
} from '../support/libvirt.js';

const stacks = integrationStacks('libvirt.test.ts');
const work = mkdtempSync(join(tmpdir(), 'sevx-test-libvirt-'));

for (const stack of stacks) {
  const hostCaps = (): El => parseXml(stackDomcaps(stack));

  test(stack.label('prerequisites: libvirtd with SEV in domcapabilities, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
    assert.is(hostCaps().child('features')?.child('sev')?.attrs['supported'], 'yes', 'domcapabilities must report <sev supported="yes"> (the stack\'s setup script patches it in)');
  });

  for (const c of libvirtCases()) {
    const title = stack.label(`libvirt ${c.name}`);
    let skip: string | undefined;
    try {
      skip = caseSkip(c, stack);
    } catch (e) {
      // The stack's version could not be read: the prerequisites test says why; this case fails with it.
      test(title, () => {
        throw e;
      });
      continue;
    }
    if (skip !== undefined) {
      test.skip(`${title} (min-libvirt.txt: ${skip})`, () => {});
      continue;
    }
    test(title, () => {
      const name = `sevx-test-${c.name}`;
      const file = join(work, `${stack.name}-${name}.xml`);
      libvirtCopy(c.out, name, file);
      const domain = parseXml(readFileSync(file, 'utf8'));
      const sev = sevExpectation(domain, hostCaps());
      assert.is(sev !== undefined, caseWantsSev(c), caseWantsSev(c) ? 'the golden output of a tagged (or --all) case has no launchSecurity' : 'an untagged case gained launchSecurity');
      // A case converted for another host's firmware (e.g. SEV-ES) renders only if libvirt sees that firmware.
      const removeFirmware = caseFirmwareDirs(c).map((dir) => overlayFirmware(dir, stack));
      let r;
      try {
        r = defineAndRender(file, name, domain, stack);
      } finally {
        for (const remove of removeFirmware) remove();
      }
      const problems = renderProblems(domain, r.defined, r.cmd, sev);
      assert.ok(problems.length === 0, `${c.name}:\n  ${problems.join('\n  ')}\n${describeCommand(r.cmd)}`);
    });
  }

  // No golden case is this bare: libvirt supplies what is missing (ACPI off, an implicit virtio memballoon), and the conversion must still hold.
  test(stack.label('libvirt: a minimal tagged domain (no <features>, no <devices>) converted by dist/sev-xform'), () => {
    const name = 'sevx-test-minimal';
    const caps = join(work, `${stack.name}-domcaps.xml`);
    writeFileSync(caps, virshOk(['domcapabilities', '--arch', 'x86_64', '--machine', 'q35'], undefined, stack));
    const input = `<domain type='kvm'>\n  <name>${name}</name>\n  <metadata>\n    ${TAG}\n  </metadata>\n  <memory unit='MiB'>256</memory>\n  <os>\n    <type arch='x86_64'>hvm</type>\n  </os>\n</domain>\n`;
    const conv = runBin(['--domcaps', caps, '--firmware-dirs', stack.firmwareDirs.join(','), '-'], { input });
    assert.is(conv.code, 0, conv.stderr);
    const file = join(work, `${stack.name}-${name}.xml`);
    writeFileSync(file, conv.stdout);
    const schema = validateSchema(file, stack);
    assert.ok(schema.code === 0, `virt-xml-validate: ${schema.stderr}${schema.stdout}`);
    const domain = parseXml(conv.stdout);
    const r = defineAndRender(file, name, domain, stack);
    const problems = renderProblems(domain, r.defined, r.cmd, sevExpectation(domain, hostCaps()));
    assert.ok(problems.length === 0, `${name}:\n  ${problems.join('\n  ')}\n${describeCommand(r.cmd)}`);
  });
}

test.after(() => rmSync(work, { recursive: true, force: true }));
if (stacks.length > 0) test.run();
else rmSync(work, { recursive: true, force: true });
