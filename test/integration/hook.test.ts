// The hook as operators get it, on every stack (test/support/stack.ts):
// install.sh puts it into the stack's real /etc/libvirt/hooks/qemu.d/ (the
// chroot's, with DESTDIR, for debian13), libvirtd is restarted to find it, and
// real `virsh start` / `save` / `restore` run through it. The suite uninstalls
// it and restarts libvirtd again, leaving the stack as it found it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runBin } from '../support/bin.js';
import { TAG, addTag, integrationStacks, requirePrerequisites, run, undefineQuietly, virsh, virshOk, type Stack } from '../support/libvirt.js';

const INSTALL = resolve('install.sh');
/** Paths as the stack's libvirtd sees them; on the host they are stack.hostPath(...). */
const HOOK = '/etc/libvirt/hooks/qemu.d/sev-xform';
const STATE_DIR = '/var/lib/sev-xform';
const MANIFEST = join(STATE_DIR, 'install-manifest');
const CACHE = join(STATE_DIR, 'host.json');
/** The binary install.sh puts into the stack (PREFIX /usr/local). */
const INSTALLED_BIN = '/usr/local/bin/sev-xform';

const TAGGED = 'sevx-test-hook-tagged';
const SEV = 'sevx-test-hook-sev';
const PLAIN = 'sevx-test-hook-plain';
// Tagged domains are always kvm: an SEV guest must be, and both stacks' set-ups make libvirt
// offer kvm even where /dev/kvm is missing (the host's file may already be gone when the
// Debian 13 run loads this file); they are refused or fail before QEMU would need KVM.
const VIRT = 'kvm';

/**
 * The type for a domain that must really start on the stack: kvm only where its
 * /dev/kvm is the real device (a plain file there only makes libvirt offer kvm;
 * QEMU then fails "Could not access KVM kernel module"), else TCG.
 */
function runnableType(stack: Stack): 'kvm' | 'qemu' {
  return stack.run('test', ['-c', '/dev/kvm']).code === 0 ? 'kvm' : 'qemu';
}

/** A small domain: no disk, so it starts in a fraction of a second. */
function smallDomain(name: string, mib: number, extra = '', type: string = VIRT): string {
  return `<domain type='${type}'>
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

const stacks = integrationStacks('hook.test.ts');
const cleanups: Array<() => void> = [];

for (const stack of stacks) {
  const work = mkdtempSync(join(tmpdir(), `sevx-test-hook-${stack.name}-`));
  // virsh save/restore paths are the daemon's: a folder inside the stack.
  const savedDir = `/tmp/sevx-test-hook-save-${stack.name}`;
  const saved = join(savedDir, `${PLAIN}.save`);
  const host = (path: string): string => stack.hostPath(path);
  const virshS = (args: string[]): ReturnType<typeof virsh> => virsh(args, undefined, stack);
  const virshOkS = (args: string[]): string => virshOk(args, undefined, stack);
  let installedByUs = false;
  let stateDirExisted = true;
  let restartNeeded = false;

  const restartLibvirtd = (): void => {
    const r = stack.restart();
    if (r.code !== 0) throw new Error(`[${stack.name}] restarting libvirtd: exit ${r.code}: ${r.stderr.trim()}`);
  };

  const uninstall = (): string[] => {
    const problems: string[] = [];
    if (installedByUs) {
      const r = run('sh', [INSTALL, '--uninstall'], { env: stack.installEnv });
      if (r.code !== 0) problems.push(`install.sh --uninstall: exit ${r.code}: ${r.stderr.trim()}`);
      installedByUs = false;
    }
    // install.sh lists the cache it wrote; this catches the one this suite rewrote when an install failed before that.
    if (!stateDirExisted && existsSync(host(STATE_DIR))) {
      rmSync(host(CACHE), { force: true });
      if (readdirSync(host(STATE_DIR)).length === 0) rmdirSync(host(STATE_DIR));
      else problems.push(`${host(STATE_DIR)} still holds ${readdirSync(host(STATE_DIR)).join(', ')} after --uninstall`);
    }
    if (restartNeeded) {
      restartLibvirtd();
      restartNeeded = false;
    }
    return problems;
  };

  /** `virsh start` etc. that must fail; returns what the user sees. */
  const virshFails = (args: string[]): string => {
    const r = virshS(args);
    assert.is.not(r.code, 0, `virsh ${args.join(' ')} succeeded; it must be refused`);
    return r.stderr;
  };

  test(stack.label('install.sh installs the hook into /etc/libvirt/hooks/qemu.d, with a host cache, and libvirtd restarts'), () => {
    requirePrerequisites([], stack);
    assert.ok(existsSync(INSTALL), `${INSTALL} is missing`);
    assert.not.ok(existsSync(host(MANIFEST)), `sev-xform is already installed here (${host(MANIFEST)}); this suite installs and uninstalls it itself, so it will not run over that installation`);
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name, stack);
    stateDirExisted = existsSync(host(STATE_DIR));

    installedByUs = true;
    const r = run('sh', [INSTALL], { env: stack.installEnv });
    assert.is(r.code, 0, `install.sh: ${r.stderr}`);
    accessSync(host(HOOK), constants.X_OK);

    // libvirt reads maxGuests from host CPUID, so this Intel host reports 0 SEV
    // slots and the hook would rightly refuse every SEV guest; the cache gets
    // the slots of the emulated SEV host (setup.sh's SEV_MAX_GUESTS default).
    const caps = virshOkS(['domcapabilities', '--arch', 'x86_64', '--machine', 'q35']).replace(/<maxGuests>\d+<\/maxGuests>/, '<maxGuests>15</maxGuests>');
    assert.match(caps, /<sev supported='yes'>/);
    const capsFile = join(work, 'domcaps.xml');
    writeFileSync(capsFile, caps);
    // The cache is written by the binary the hook runs, as the stack's libvirtd sees the system.
    let cache;
    if (stack.root === '/') cache = runBin(['host', '--write-cache', '--domcaps', capsFile]);
    else {
      const inside = `/tmp/sevx-test-hook-domcaps-${stack.name}.xml`;
      writeFileSync(host(inside), caps);
      try {
        cache = stack.run(INSTALLED_BIN, ['host', '--write-cache', '--domcaps', inside]);
      } finally {
        rmSync(host(inside), { force: true });
      }
    }
    assert.match(cache.stderr, /host cache written to \/var\/lib\/sev-xform\/host\.json/, `host --write-cache: exit ${cache.code}: ${cache.stderr}`);
    assert.match(readFileSync(host(CACHE), 'utf8'), /<maxGuests>15<\/maxGuests>/);

    restartNeeded = true;
    restartLibvirtd();
  });

  test(stack.label('a tagged but unconverted domain: virsh start fails with sev-xform\'s refusal'), () => {
    const file = join(work, `${TAGGED}.xml`);
    writeFileSync(file, TAGGED_XML);
    virshOkS(['define', file]);
    const err = virshFails(['start', TAGGED]);
    assert.match(err, /Hook script execution failed/);
    assert.match(err, new RegExp(`sev-xform: refusing to start ${TAGGED} unencrypted: `));
    assert.is(virshOkS(['domstate', TAGGED]).trim(), 'shut off');
  });

  test(stack.label('the converted domain gets past the hook and fails later, for a reason of this host'), () => {
    const conv = runBin(['--domcaps', join(work, 'domcaps.xml'), '-'], { input: TAGGED_XML.replace(TAGGED, SEV) });
    assert.is(conv.code, 0, conv.stderr);
    const file = join(work, `${SEV}.xml`);
    writeFileSync(file, conv.stdout);
    virshOkS(['define', file]);
    const err = virshFails(['start', SEV]);
    assert.not.match(err, /sev-xform|Hook script/, 'the hook refused a converted domain');
    // This container cannot raise RLIMIT_MEMLOCK for the pinned memory, and has no /dev/sev.
    assert.match(err, /cannot limit locked memory|\/dev\/sev/, 'an unexpected start failure');
    console.log(`hook: ${SEV} passed the hook; libvirt then failed: ${err.trim().split('\n').pop()}`);
  });

  test(stack.label('an untagged small domain starts and saves with the hook installed'), () => {
    const file = join(work, `${PLAIN}.xml`);
    writeFileSync(file, smallDomain(PLAIN, 64, '', runnableType(stack)));
    virshOkS(['define', file]);
    mkdirSync(host(savedDir), { recursive: true });
    virshOkS(['start', PLAIN]);
    assert.is(virshOkS(['domstate', PLAIN]).trim(), 'running');
    virshOkS(['save', PLAIN, saved]);
    assert.is(virshOkS(['domstate', PLAIN]).trim(), 'shut off');
  });

  test(stack.label('virsh restore --xml of the saved image with the tag added is refused by the hook'), () => {
    const image = virshOkS(['save-image-dumpxml', saved]);
    const taggedImage = join(work, `${PLAIN}.tagged.xml`);
    writeFileSync(taggedImage, addTag(image));
    assert.ok(readFileSync(taggedImage, 'utf8').includes(TAG));
    const err = virshFails(['restore', saved, '--xml', taggedImage]);
    assert.match(err, new RegExp(`sev-xform: refusing to restore ${PLAIN}: `));
    assert.is(virshOkS(['domstate', PLAIN]).trim(), 'shut off');
  });

  test(stack.label('virsh restore of the untagged saved image still works'), () => {
    virshOkS(['restore', saved]);
    assert.is(virshOkS(['domstate', PLAIN]).trim(), 'running');
    virshOkS(['destroy', PLAIN]);
  });

  test(stack.label('install.sh --uninstall removes the hook, and libvirtd restarts without it'), () => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name, stack);
    const problems = uninstall();
    assert.equal(problems, []);
    assert.not.ok(existsSync(host(HOOK)), `${host(HOOK)} is still there`);
    assert.not.ok(existsSync(host(MANIFEST)), `${host(MANIFEST)} is still there`);
  });

  // Also after a failure half-way: no test domain, hook or daemon restart is left behind.
  cleanups.push(() => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name, stack);
    rmSync(work, { recursive: true, force: true });
    rmSync(host(savedDir), { recursive: true, force: true });
    const problems = uninstall();
    if (problems.length > 0) console.error(`[${stack.name}] hook.test.ts clean-up: ${problems.join('; ')}`);
  });
}

test.after(() => {
  for (const cleanup of cleanups) cleanup();
});
if (stacks.length > 0) test.run();
