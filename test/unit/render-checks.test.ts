// The integration suite's judgement of a rendered QEMU command line
// (test/support/libvirt.ts renderProblems) for SEV-SNP, and the stack version
// helpers, on fixed inputs: the checks must catch what they exist to catch.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { parseQemuArgv, parseXml, renderProblems, sevExpectation } from '../support/libvirt.js';
import { compareVersions } from '../support/stack.js';

const DOMCAPS = parseXml(`<domainCapabilities><features><sev supported='yes'><cbitpos>47</cbitpos><reducedPhysBits>1</reducedPhysBits></sev></features></domainCapabilities>`);

const SNP_DOMAIN = parseXml(`<domain type='kvm'>
  <name>x</name>
  <os><type arch='x86_64' machine='q35'>hvm</type><loader type='rom' stateless='yes'>/fw.fd</loader></os>
  <devices><memballoon model='none'/></devices>
  <launchSecurity type='sev-snp' authorKey='yes' vcek='no' kernelHashes='yes'>
    <cbitpos>51</cbitpos>
    <reducedPhysBits>1</reducedPhysBits>
    <policy>0x00030000</policy>
    <hostData>MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=</hostData>
  </launchSecurity>
</domain>`);

/** What libvirt 11.3 rendered for such a domain (seen on the Debian 13 stack), with `object` as the SNP object. */
function argv(object: string, machineExtra = ''): string {
  return `/usr/bin/qemu-system-x86_64 -name guest=x -machine pc-q35-10.0,usb=off,dump-guest-core=off,memory-backend=pc.ram,confidential-guest-support=lsec0${machineExtra},acpi=on -bios /fw.fd -m size=524288k '${object}'`.replace(
    ` '${object}'`,
    ` -object '${object}'`,
  );
}

const GOOD = '{"qom-type":"sev-snp-guest","id":"lsec0","cbitpos":51,"reduced-phys-bits":1,"kernel-hashes":true,"policy":196608,"host-data":"MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=","author-key-enabled":true,"vcek-disabled":true}';

test('sevExpectation reads an SNP launchSecurity: type, 64-bit policy, flags and blobs', () => {
  const sev = sevExpectation(SNP_DOMAIN, DOMCAPS);
  assert.ok(sev);
  assert.is(sev.qomType, 'sev-snp-guest');
  assert.is(sev.policy, 0x30000n);
  assert.is(sev.cbitpos, 51, 'launchSecurity wins over domcapabilities');
  assert.equal(sev.props, { 'kernel-hashes': true, 'author-key-enabled': true, 'vcek-disabled': true, 'host-data': 'MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=' });
});

test('renderProblems accepts what libvirt 11.3 rendered for it', () => {
  const cmd = parseQemuArgv(argv(GOOD));
  assert.equal(renderProblems(SNP_DOMAIN, SNP_DOMAIN, cmd, sevExpectation(SNP_DOMAIN, DOMCAPS)), []);
});

test('renderProblems catches a wrong SNP render: object type, policy, flags, blobs, writable NVRAM', () => {
  const sev = sevExpectation(SNP_DOMAIN, DOMCAPS);
  const problems = (object: string, machineExtra = ''): string[] => renderProblems(SNP_DOMAIN, SNP_DOMAIN, parseQemuArgv(argv(object, machineExtra)), sev);
  assert.match(problems(GOOD.replace('sev-snp-guest', 'sev-guest')).join('\n'), /rendered as sev-guest, not sev-snp-guest/);
  assert.match(problems(GOOD.replace('196608', '65536')).join('\n'), /policy is 65536, launchSecurity says 196608/);
  assert.match(problems(GOOD.replace('"vcek-disabled":true', '"vcek-disabled":false')).join('\n'), /vcek-disabled/);
  assert.match(problems(GOOD.replace(',"author-key-enabled":true', '')).join('\n'), /author-key-enabled is undefined/);
  assert.match(problems(GOOD.replace('MzMz', 'NDQ0')).join('\n'), /host-data/);
  assert.match(problems(GOOD.replace('}', ',"id-block":"AA=="}')).join('\n'), /carries id-block, which launchSecurity does not ask for/);
  assert.match(problems(GOOD, ',pflash1=libvirt-pflash1-storage').join('\n'), /writable NVRAM/);
});

test('renderProblems: a domain without launchSecurity must get no SEV or SNP object', () => {
  const plain = parseXml(readFileSync('fixtures/untagged-i440fx-passthrough/out.xml', 'utf8'));
  assert.match(renderProblems(plain, plain, parseQemuArgv(argv(GOOD)), undefined).join('\n'), /not SEV/);
});

test('compareVersions orders libvirt versions numerically', () => {
  assert.ok(compareVersions('11.3.0', '10.5.0') > 0);
  assert.ok(compareVersions('9.0.0', '9.1.0') < 0);
  assert.ok(compareVersions('10.10.0', '10.9.0') > 0);
  assert.is(compareVersions('11.1', '11.1.0'), 0);
});

test.run();
