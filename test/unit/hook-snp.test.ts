// The hook with SEV-SNP guests: refused unconverted, at migrate and at restore
// like SEV guests, refused on a host whose libvirt cannot launch them, and
// counted against the SEV-ES slot range, from which SEV-SNP guests take their
// ASIDs (the kernel's 1..min_sev_asid-1; see docs/guide.md).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { runCli, type CliRun } from '../support/run-cli.js';
import { transformDomain } from '../../src/transform.js';
import { hostFacts } from '../../src/host/facts.js';
import { convert, domcaps, fixture, hookEnvsFor, renamed, uuidN, type HookEnv } from '../fixtures-hook/env.js';

const SNP_CAPS = 'fixtures/hosts/snp-genoa-libvirt11.xml';
const AMDSEV = '/usr/local/share/ovmf/OVMF.amdsev.fd';

/** The SEV-SNP host's domcaps (libvirt 11.3) with the given slot counts. */
function snpDomcaps(maxGuests: number, maxESGuests: number): string {
  return readFileSync(SNP_CAPS, 'utf8')
    .replace(/<maxGuests>\d+<\/maxGuests>/, `<maxGuests>${maxGuests}</maxGuests>`)
    .replace(/<maxESGuests>\d+<\/maxESGuests>/, `<maxESGuests>${maxESGuests}</maxESGuests>`);
}

const taggedSnp = fixture('tagged.xml').replace('<sev:sev xmlns:sev="urn:sev-xform:domain:1"/>', '<sev:sev xmlns:sev="urn:sev-xform:domain:1" model="sev-snp"/>');
// Debian ships no amd-sev-snp descriptor, so the guest boots the AmdSev build given by path.
const convertedSnp = (() => {
  const host = hostFacts({ domcaps: SNP_CAPS, firmwareDirs: ['test/fixtures-hook/firmware'], run: () => ({ status: null, stdout: '', stderr: '', error: 'no virsh in tests' }) });
  return transformDomain(taggedSnp, { firmware: AMDSEV }, host).output;
})();
const converted = convert(fixture('tagged.xml'));
const convertedEs = convert(fixture('tagged-es.xml'));

const hostEnv = hookEnvsFor(test);

function hook(e: HookEnv, name: string, op: string, stdin: string): Promise<CliRun> {
  return runCli(['hook', name, op, 'begin', '-'], { stdin, env: e.env });
}

function refused(r: CliRun, ...mentions: string[]): void {
  assert.is(r.code, 1, `exit code; stderr: ${r.stderr}`);
  assert.is(r.stderr.split('\n').length, 2, `one stderr line: ${r.stderr}`);
  for (const m of mentions) assert.ok(r.stderr.includes(m), `stderr mentions '${m}': ${r.stderr}`);
}

test('the converted SEV-SNP guest is what the filter should make of it', () => {
  assert.ok(taggedSnp.includes('model="sev-snp"'));
  assert.match(convertedSnp, /<launchSecurity type='sev-snp'>/);
  assert.match(convertedSnp, new RegExp(`<loader type='rom' stateless='yes'>${AMDSEV}</loader>`));
});

test('prepare: a converted SEV-SNP guest starts on a libvirt 11 SEV-SNP host', async () => {
  const r = await hook(hostEnv({ domcaps: snpDomcaps(410, 99) }), 'snp', 'prepare', convertedSnp);
  assert.is(r.stderr, '');
  assert.is(r.code, 0);
});

test('prepare: an unconverted SEV-SNP-tagged domain is refused', async () => {
  refused(await hook(hostEnv({ domcaps: snpDomcaps(410, 99) }), 'snp', 'prepare', taggedSnp), 'refusing to start snp unencrypted', 'sev-snp');
});

test('prepare: a host cache from libvirt < 10.5 refuses a SEV-SNP guest', async () => {
  refused(await hook(hostEnv({ domcaps: domcaps() }), 'snp', 'prepare', convertedSnp), 'refusing to start snp unencrypted: host: ', 'libvirt >= 10.5');
});

test('migrate and restore of a SEV-SNP guest are refused', async () => {
  const e = hostEnv({ domcaps: snpDomcaps(410, 99) });
  refused(await hook(e, 'snp', 'migrate', convertedSnp), 'refusing to migrate snp');
  refused(await hook(e, 'snp', 'restore', convertedSnp), 'refusing to restore snp');
});

test('prepare: SEV-SNP guests share the SEV-ES slot range, not the SEV one', async () => {
  // One ES-range slot, held by a running SEV-ES guest: no room for a SEV-SNP guest.
  const esHeld = hostEnv({ domcaps: snpDomcaps(410, 1), running: [renamed(convertedEs, 'es1', uuidN(1))] });
  refused(await hook(esHeld, 'snp', 'prepare', convertedSnp), 'the host has 1 SEV-ES/SEV-SNP guest slot(s)', '<maxESGuests>', 'es1');
  // ... held by a running SEV-SNP guest: an SEV-ES guest cannot start either.
  const snpHeld = hostEnv({ domcaps: snpDomcaps(410, 1), running: [renamed(convertedSnp, 'snp1', uuidN(2))] });
  refused(await hook(snpHeld, 'es', 'prepare', convertedEs), 'the host has 1 SEV-ES guest slot(s)', 'snp1');
  // A plain SEV guest does not use that range.
  const sevHeld = hostEnv({ domcaps: snpDomcaps(1, 1), running: [renamed(converted, 'sev1', uuidN(3))] });
  const r = await hook(sevHeld, 'snp', 'prepare', convertedSnp);
  assert.is(r.stderr, '');
  assert.is(r.code, 0);
});

test.run();
