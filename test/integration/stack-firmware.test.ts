// Where the stacks differ for SEV-SNP, the filter's verdict and libvirt's must
// agree, on each stack with that stack's own domcapabilities and firmware
// descriptors:
// - libvirt 9.0 (debian12) has no SNP: the filter refuses naming libvirt 10.5,
//   and libvirt 9.0 itself rejects an SNP domain;
// - libvirt 11 (debian13) has SNP, but none of Debian 13's descriptors lists
//   amd-sev-snp: the filter refuses naming the firmware, and libvirt finds no
//   firmware for the same domain either;
// - with an AmdSev descriptor installed in the stack, the filter converts and
//   libvirt 11 renders an sev-snp-guest that boots that firmware as a ROM.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/bin.js';
import {
  defineAndRender,
  describeCommand,
  integrationStacks,
  overlayFirmware,
  parseXml,
  renderProblems,
  requirePrerequisites,
  sevExpectation,
  stackDomcaps,
  undefineQuietly,
  validateSchema,
  virsh,
  type Stack,
} from '../support/libvirt.js';

/** An operator's AmdSev build, as snp13's goldens describe it (fixtures/hosts/firmware-snp). */
const AMDSEV_DESCRIPTORS = 'fixtures/hosts/firmware-snp';
const AMDSEV_FD = '/usr/local/share/ovmf/OVMF.amdsev.fd';
const SNP_LIBVIRT = '10.5.0';

const stacks = integrationStacks('stack-firmware.test.ts');
const work = mkdtempSync(join(tmpdir(), 'sevx-test-stack-firmware-'));

function taggedSnp(name: string): string {
  return `<domain type='kvm'>
  <name>${name}</name>
  <metadata>
    <sev:sev xmlns:sev="urn:sev-xform:domain:1" model="sev-snp"/>
  </metadata>
  <memory unit='MiB'>512</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <features>
    <acpi/>
  </features>
  <devices>
    <memballoon model='virtio'>
      <driver iommu='on'/>
    </memballoon>
  </devices>
</domain>
`;
}

/** What the filter says with the stack's own host facts. */
function convert(stack: Stack, name: string): { code: number | null; stdout: string; stderr: string } {
  const caps = join(work, `${stack.name}-domcaps.xml`);
  writeFileSync(caps, stackDomcaps(stack));
  return runBin(['--domcaps', caps, '--firmware-dirs', stack.firmwareDirs.join(','), '-'], { input: taggedSnp(name) });
}

/** The SNP domain the filter would write with auto-selected firmware, written by hand. */
function handWrittenSnp(name: string): string {
  return `<domain type='kvm'>
  <name>${name}</name>
  <memory unit='MiB'>512</memory>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader stateless='yes'/>
  </os>
  <features>
    <acpi/>
  </features>
  <devices>
    <memballoon model='virtio'>
      <driver iommu='on'/>
    </memballoon>
  </devices>
  <launchSecurity type='sev-snp'>
    <policy>0x30000</policy>
  </launchSecurity>
</domain>
`;
}

for (const stack of stacks) {
  test(stack.label('prerequisites: the stack answers, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
  });

  test(stack.label("SEV-SNP with the stack's own firmware descriptors: the filter refuses, and libvirt agrees"), () => {
    const name = 'sevx-test-snp-own-firmware';
    const conv = convert(stack, name);
    assert.is(conv.code, 1, `the filter converted an SNP guest on ${stack.name}: ${conv.stdout.slice(0, 300)}`);
    assert.is(conv.stdout, '', 'a refusal writes no XML');
    const file = join(work, `${stack.name}-${name}.xml`);
    writeFileSync(file, handWrittenSnp(name));
    undefineQuietly(name, stack);
    if (!stack.libvirtAtLeast(SNP_LIBVIRT)) {
      assert.match(conv.stderr, /SEV-SNP needs libvirt >= 10\.5/);
      const define = virsh(['define', file], undefined, stack);
      undefineQuietly(name, stack);
      assert.is.not(define.code, 0, `libvirt ${stack.versions().libvirt} defined an SNP domain`);
      console.log(`${stack.label('SNP')}: libvirt ${stack.versions().libvirt} says: ${define.stderr.trim().split('\n')[0]}`);
      return;
    }
    assert.match(conv.stderr, /amd-sev-snp/, 'the refusal names the missing firmware feature');
    // libvirt 11 picks firmware for a stateless loader already at define (seen: "Unable to find 'efi' firmware that is compatible with the current configuration").
    const define = virsh(['define', file], undefined, stack);
    try {
      let refusal = define.stderr;
      if (define.code === 0) {
        const render = virsh(['domxml-to-native', 'qemu-argv', '--domain', name], undefined, stack);
        assert.is.not(render.code, 0, `libvirt ${stack.versions().libvirt} found SNP firmware among the stack's own descriptors: ${render.stdout.slice(0, 300)}`);
        refusal = render.stderr;
      }
      assert.match(refusal, /Unable to find .*firmware/);
      console.log(`${stack.label('SNP')}: libvirt ${stack.versions().libvirt} ${define.code === 0 ? 'renders' : 'defines'} nothing either: ${refusal.split('\n').find((l) => /Unable to find/.test(l))?.trim()}`);
    } finally {
      undefineQuietly(name, stack);
    }
  });

  test(stack.label('SEV-SNP with an AmdSev firmware descriptor installed: the filter converts and libvirt renders it'), () => {
    const name = 'sevx-test-snp-amdsev';
    const removeFirmware = overlayFirmware(AMDSEV_DESCRIPTORS, stack);
    try {
      const conv = convert(stack, name);
      if (!stack.libvirtAtLeast(SNP_LIBVIRT)) {
        assert.is(conv.code, 1, 'the filter converted an SNP guest for libvirt < 10.5');
        assert.match(conv.stderr, /SEV-SNP needs libvirt >= 10\.5/);
        return;
      }
      assert.is(conv.code, 0, `the filter refused: ${conv.stderr}`);
      const file = join(work, `${stack.name}-${name}.xml`);
      writeFileSync(file, conv.stdout);
      const schema = validateSchema(file, stack);
      assert.ok(schema.code === 0, `virt-xml-validate: ${schema.stderr}${schema.stdout}`);
      const domain = parseXml(readFileSync(file, 'utf8'));
      const sev = sevExpectation(domain, parseXml(stackDomcaps(stack)));
      assert.is(sev?.type, 'sev-snp');
      assert.is(sev?.policy, 0x30000n, 'default SNP policy');
      const r = defineAndRender(file, name, domain, stack);
      const problems = renderProblems(domain, r.defined, r.cmd, sev);
      assert.ok(problems.length === 0, `${name}:\n  ${problems.join('\n  ')}\n${describeCommand(r.cmd)}`);
      const bios = r.cmd.words.indexOf('-bios');
      assert.is(bios >= 0 ? r.cmd.words[bios + 1] : undefined, AMDSEV_FD, `libvirt did not boot the AmdSev build as a ROM\n${describeCommand(r.cmd)}`);
    } finally {
      removeFirmware();
    }
  });
}

test.after(() => rmSync(work, { recursive: true, force: true }));
if (stacks.length > 0) test.run();
else rmSync(work, { recursive: true, force: true });
