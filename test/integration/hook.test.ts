// The hook as operators get it: install.sh puts it into the real
// /etc/libvirt/hooks/qemu.d/, libvirtd is restarted to find it, and real
// `virsh start` / `save` / `restore` run through it. The suite uninstalls it
// and restarts libvirtd again, leaving the machine as it found it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runBin } from '../support/bin.js';
import { TAG, addTag, integrationEnabled, requirePrerequisites, run, runnableVirtType, undefineQuietly, virsh, virshOk } from '../support/libvirt.js';

const INSTALL = resolve('install.sh');
const RESTART = resolve('test/integration/host/restart.sh');
const HOOK = '/etc/libvirt/hooks/qemu.d/sev-xform';
const STATE_DIR = '/var/lib/sev-xform';
const MANIFEST = join(STATE_DIR, 'install-manifest');
const CACHE = join(STATE_DIR, 'host.json');

const TAGGED = 'sevx-test-hook-tagged';
const SEV = 'sevx-test-hook-sev';
const PLAIN = 'sevx-test-hook-plain';
// The guest this suite starts runs under KVM when the host really has it (it
// does here, nested), else under TCG. Tagged domains are always kvm: an SEV
// guest must be, and setup.sh makes libvirt offer kvm even without /dev/kvm;
// they are refused before QEMU would need KVM.
const RUN_VIRT = runnableVirtType();

/** A small domain: no disk, so it starts in a fraction of a second. */
function smallDomain(name: string, mib: number, extra = '', virt: 'kvm' | 'qemu' = RUN_VIRT): string {
  return `<domain type='${virt}'>
  <name>${name}</name>
  <memory unit='MiB'>${mib}</memory>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
${extra}</domain>
`;
}

// ACPI because libvirt refuses UEFI without it, and an explicit memballoon
// because the implicit one libvirt adds carries no iommu; this domain tests
// the hook, not those rules (libvirt.test.ts holds a minimal domain for them).
const TAGGED_XML = addTag(
  smallDomain(TAGGED, 256, `  <features>\n    <acpi/>\n  </features>\n  <devices>\n    <memballoon model='virtio'/>\n  </devices>\n`, 'kvm'),
);

if (integrationEnabled('hook.test.ts')) {
  const work = mkdtempSync(join(tmpdir(), 'sevx-test-hook-'));
  const saved = join(work, `${PLAIN}.save`);
  let installedByUs = false;
  let stateDirExisted = true;
  let restartNeeded = false;

  const restartLibvirtd = (): void => {
    const r = run('bash', [RESTART]);
    if (r.code !== 0) throw new Error(`${RESTART}: exit ${r.code}: ${r.stderr.trim()}`);
  };

  const uninstall = (): string[] => {
    const problems: string[] = [];
    if (installedByUs) {
      const r = run('sh', [INSTALL, '--uninstall']);
      if (r.code !== 0) problems.push(`install.sh --uninstall: exit ${r.code}: ${r.stderr.trim()}`);
      installedByUs = false;
    }
    // install.sh lists the cache it wrote; this catches the one this suite rewrote when an install failed before that.
    if (!stateDirExisted && existsSync(STATE_DIR)) {
      rmSync(CACHE, { force: true });
      if (readdirSync(STATE_DIR).length === 0) rmdirSync(STATE_DIR);
      else problems.push(`${STATE_DIR} still holds ${readdirSync(STATE_DIR).join(', ')} after --uninstall`);
    }
    if (restartNeeded) {
      restartLibvirtd();
      restartNeeded = false;
    }
    return problems;
  };

  /** `virsh start` etc. that must fail; returns what the user sees. */
  const virshFails = (args: string[]): string => {
    const r = virsh(args);
    assert.is.not(r.code, 0, `virsh ${args.join(' ')} succeeded; it must be refused`);
    return r.stderr;
  };

  test('install.sh installs the hook into /etc/libvirt/hooks/qemu.d, with a host cache, and libvirtd restarts', () => {
    requirePrerequisites();
    assert.ok(existsSync(INSTALL), `${INSTALL} is missing`);
    assert.not.ok(existsSync(MANIFEST), `sev-xform is already installed here (${MANIFEST}); this suite installs and uninstalls it itself, so it will not run over that installation`);
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name);
    stateDirExisted = existsSync(STATE_DIR);

    installedByUs = true;
    const r = run('sh', [INSTALL]);
    assert.is(r.code, 0, `install.sh: ${r.stderr}`);
    accessSync(HOOK, constants.X_OK);

    // libvirt reads maxGuests from host CPUID, so this Intel host reports 0 SEV
    // slots and the hook would rightly refuse every SEV guest; the cache gets
    // the slots of the emulated SEV host (setup.sh's SEV_MAX_GUESTS default).
    const caps = virshOk(['domcapabilities', '--arch', 'x86_64', '--machine', 'q35']).replace(/<maxGuests>\d+<\/maxGuests>/, '<maxGuests>15</maxGuests>');
    assert.match(caps, /<sev supported='yes'>/);
    const capsFile = join(work, 'domcaps.xml');
    writeFileSync(capsFile, caps);
    const cache = runBin(['host', '--write-cache', '--domcaps', capsFile]);
    assert.match(cache.stderr, /host cache written to \/var\/lib\/sev-xform\/host\.json/, `host --write-cache: exit ${cache.code}: ${cache.stderr}`);
    assert.match(readFileSync(CACHE, 'utf8'), /<maxGuests>15<\/maxGuests>/);

    restartNeeded = true;
    restartLibvirtd();
  });

  test('a tagged but unconverted domain: virsh start fails with sev-xform\'s refusal', () => {
    const file = join(work, `${TAGGED}.xml`);
    writeFileSync(file, TAGGED_XML);
    virshOk(['define', file]);
    const err = virshFails(['start', TAGGED]);
    assert.match(err, /Hook script execution failed/);
    assert.match(err, new RegExp(`sev-xform: refusing to start ${TAGGED} unencrypted: `));
    assert.is(virshOk(['domstate', TAGGED]).trim(), 'shut off');
  });

  test('the converted domain gets past the hook and fails later, for a reason of this host', () => {
    const conv = runBin(['--domcaps', join(work, 'domcaps.xml'), '-'], { input: TAGGED_XML.replace(TAGGED, SEV) });
    assert.is(conv.code, 0, conv.stderr);
    const file = join(work, `${SEV}.xml`);
    writeFileSync(file, conv.stdout);
    virshOk(['define', file]);
    const err = virshFails(['start', SEV]);
    assert.not.match(err, /sev-xform|Hook script/, 'the hook refused a converted domain');
    // This container cannot raise RLIMIT_MEMLOCK for the pinned memory, and has no /dev/sev.
    assert.match(err, /cannot limit locked memory|\/dev\/sev/, 'an unexpected start failure');
    console.log(`hook: ${SEV} passed the hook; libvirt then failed: ${err.trim().split('\n').pop()}`);
  });

  test('an untagged small domain starts and saves with the hook installed', () => {
    const file = join(work, `${PLAIN}.xml`);
    writeFileSync(file, smallDomain(PLAIN, 64));
    virshOk(['define', file]);
    virshOk(['start', PLAIN]);
    assert.is(virshOk(['domstate', PLAIN]).trim(), 'running');
    virshOk(['save', PLAIN, saved]);
    assert.is(virshOk(['domstate', PLAIN]).trim(), 'shut off');
  });

  test('virsh restore --xml of the saved image with the tag added is refused by the hook', () => {
    const image = virshOk(['save-image-dumpxml', saved]);
    const taggedImage = join(work, `${PLAIN}.tagged.xml`);
    writeFileSync(taggedImage, addTag(image));
    assert.ok(readFileSync(taggedImage, 'utf8').includes(TAG));
    const err = virshFails(['restore', saved, '--xml', taggedImage]);
    assert.match(err, new RegExp(`sev-xform: refusing to restore ${PLAIN}: `));
    assert.is(virshOk(['domstate', PLAIN]).trim(), 'shut off');
  });

  test('virsh restore of the untagged saved image still works', () => {
    virshOk(['restore', saved]);
    assert.is(virshOk(['domstate', PLAIN]).trim(), 'running');
    virshOk(['destroy', PLAIN]);
  });

  test('install.sh --uninstall removes the hook, and libvirtd restarts without it', () => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name);
    const problems = uninstall();
    assert.equal(problems, []);
    assert.not.ok(existsSync(HOOK), `${HOOK} is still there`);
    assert.not.ok(existsSync(MANIFEST), `${MANIFEST} is still there`);
  });

  // Also after a failure half-way: no test domain, hook or daemon restart is left behind.
  test.after(() => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name);
    rmSync(work, { recursive: true, force: true });
    const problems = uninstall();
    if (problems.length > 0) console.error(`hook.test.ts clean-up: ${problems.join('; ')}`);
  });
  test.run();
}
