// SEV-SNP pieces the goldens cannot reach: the 64-bit policy parser, the
// libvirt version named from `virsh version` when the filter asks virsh itself,
// the kvm_amd sev_snp parameter read under --host-root, and --model.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { runCli } from '../support/run-cli.js';
import { FailureError } from '../../src/failure.js';
import { DEFAULT_SNP_POLICY, formatSnpPolicy, parseSnpPolicy } from '../../src/domain/policy.js';
import { parseDomainCaps } from '../../src/host/domcaps.js';
import type { CommandResult, RunCommand } from '../../src/host/facts.js';

const SNP_IN = 'fixtures/snp-model-default-policy/in.xml';
const ES_IN = 'fixtures/snp-sev-es-refused-on-snp-host/in.xml';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e: unknown) {
    if (e instanceof FailureError && e.failure.kind === 'refused') return e.failure.reason;
    throw e;
  }
  throw new Error('not refused');
}

test('SNP policy: 64 bits, bit 17 required, bits 25-63 reserved, eight hex digits out', () => {
  assert.is(parseSnpPolicy('0x30000', 'x'), DEFAULT_SNP_POLICY);
  assert.is(parseSnpPolicy(' 30000 ', 'x'), 0x30000n);
  assert.is(parseSnpPolicy('0x0000000001ff0000', 'x'), 0x1ff0000n);
  assert.is(formatSnpPolicy(0x30000n), '0x00030000');
  assert.match(refusal(() => parseSnpPolicy('0x10000', 'x')), /bit 17 \(0x20000\) clear/);
  assert.match(refusal(() => parseSnpPolicy('0', 'x')), /bit 17/);
  assert.match(refusal(() => parseSnpPolicy('0x8000000000030000', 'x')), /reserved bits 25-63/);
  assert.match(refusal(() => parseSnpPolicy('0x2030000', 'x')), /reserved bits 25-63 \(0x02000000\)/);
  assert.match(refusal(() => parseSnpPolicy('0x10000000000030000', 'x')), /at most 64 bits/);
  assert.match(refusal(() => parseSnpPolicy('SMT', 'x')), /not a hexadecimal number/);
});

test('domcapabilities: <launchSecurity> sectypes, none before libvirt 10.5, [] when supported=no', () => {
  const snp = readFileSync('fixtures/hosts/snp-genoa-libvirt11.xml', 'utf8');
  assert.equal(parseDomainCaps(snp, 'x').launchSecurityTypes, ['sev', 'sev-snp']);
  assert.is(parseDomainCaps(readFileSync('fixtures/hosts/sev-epyc-rome.xml', 'utf8'), 'x').launchSecurityTypes, undefined);
  const no = snp.replace(/<launchSecurity supported='yes'>[\s\S]*<\/launchSecurity>/, "<launchSecurity supported='no'/>");
  assert.equal(parseDomainCaps(no, 'x').launchSecurityTypes, []);
});

/** virsh as the filter runs it on a host: domcapabilities from a file, `version --daemon` as given. */
function virsh(domcapsFile: string, version: string | null): { run: RunCommand; calls: string[] } {
  const calls: string[] = [];
  const run: RunCommand = (cmd, args): CommandResult => {
    const line = [cmd, ...args].join(' ');
    calls.push(line);
    if (line === 'virsh domcapabilities --arch x86_64 --machine q35') return { status: 0, stdout: readFileSync(domcapsFile, 'utf8'), stderr: '' };
    if (line === 'virsh version --daemon' && version !== null)
      return { status: 0, stdout: `Compiled against library: libvirt ${version}\nUsing library: libvirt ${version}\nUsing API: QEMU ${version}\nRunning hypervisor: QEMU 7.2.0\nRunning against daemon: ${version}\n`, stderr: '' };
    return { status: 1, stdout: '', stderr: 'error: failed to connect to the hypervisor' };
  };
  return { run, calls };
}

test('libvirt < 10.5 asked through virsh: the refusal names the daemon version; untagged domains never ask', async () => {
  const v = virsh('fixtures/hosts/sev-epyc-rome.xml', '9.0.0');
  const r = await runCli(['--firmware-dirs', 'fixtures/hosts/firmware-snp', SNP_IN], { run: v.run });
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  assert.is(r.stderr, "sev-xform: host: SEV-SNP needs libvirt >= 10.5 for <launchSecurity type='sev-snp'>, and this host runs libvirt 9.0.0; upgrade libvirt (Debian 13 ships 11.3) or ask for model 'sev' or 'sev-es'\n");
  // virsh version failing: the domcapabilities still tell.
  const none = virsh('fixtures/hosts/sev-epyc-rome.xml', null);
  const r2 = await runCli(['--firmware-dirs', 'fixtures/hosts/firmware-snp', SNP_IN], { run: none.run });
  assert.match(r2.stderr, /have no <launchSecurity> element, so libvirt is older than 10\.5/);
  // A new enough libvirt is not asked its version at all.
  const ok = virsh('fixtures/hosts/snp-genoa-libvirt11.xml', '11.3.0');
  const r3 = await runCli(['--firmware-dirs', 'fixtures/hosts/firmware-snp', SNP_IN], { run: ok.run });
  assert.is(r3.code, 0, r3.stderr);
  assert.equal(ok.calls, ['virsh domcapabilities --arch x86_64 --machine q35']);
  const untagged = virsh('fixtures/hosts/sev-epyc-rome.xml', '9.0.0');
  const input = readFileSync(SNP_IN, 'utf8').replace(/\s*<sev:sev [^>]*\/>/, '');
  const r4 = await runCli(['-'], { stdin: input, run: untagged.run });
  assert.is(r4.stdout, input);
  assert.equal(untagged.calls, []);
});

test('SEV-ES: refused when the host (via --host-root, or this host when virsh describes it) has kvm_amd sev_snp on', async () => {
  const snpHost = ['--domcaps', 'fixtures/hosts/snp-genoa-libvirt11.xml', '--firmware-dirs', 'fixtures/hosts/firmware-snp'];
  const refused = await runCli([...snpHost, '--host-root', 'fixtures/hostroots/snp-host', ES_IN]);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /CVE-2025-48514/);
  // The same request on a host with SEV-SNP off converts.
  const off = await runCli([...snpHost, '--host-root', 'fixtures/hostroots/sev-es-host', ES_IN]);
  assert.is(off.code, 0, off.stderr);
  assert.match(off.stdout, /<policy>0x0037<\/policy>/);
  // A --domcaps file without --host-root may describe another host: this one's /sys is not read.
  const file = await runCli([...snpHost, ES_IN]);
  assert.is(file.code, 0, file.stderr);
});

test('--model: overrides the tag, is checked against its choices, and conflicts with a tag snp-policy', async () => {
  const snpHost = ['--domcaps', 'fixtures/hosts/snp-genoa-libvirt11.xml', '--firmware-dirs', 'fixtures/hosts/firmware-snp'];
  const sev = await runCli([...snpHost, '--model', 'sev', SNP_IN]);
  assert.is(sev.code, 0, sev.stderr);
  assert.match(sev.stdout, /<launchSecurity type='sev'>/);
  const bad = await runCli([...snpHost, '--model', 'snp', SNP_IN]);
  assert.is(bad.code, 2);
  const conflict = await runCli([...snpHost, '--model', 'sev-es', 'fixtures/snp-tag-snp-policy-explicit/in.xml']);
  assert.is(conflict.code, 1);
  assert.match(conflict.stderr, /^sev-xform: refused: --model: 'sev-es' conflicts with the tag's snp-policy/);
  const unknown = await runCli([...snpHost, '-'], { stdin: readFileSync(SNP_IN, 'utf8').replace('model="sev-snp"', 'model="snp"') });
  assert.match(unknown.stderr, /model 'snp' is not 'sev', 'sev-es' or 'sev-snp'/);
});

test.run();
