// The hook as operators get it, on every stack (test/support/stack.ts):
// install.sh puts it into the stack's real /etc/libvirt/hooks/qemu.d/ (the
// chroot's, with DESTDIR, for debian13), libvirtd is restarted to find it, and
// real `virsh start` / `save` / `restore` run through it. The suite uninstalls
// it and restarts libvirtd again, leaving the stack as it found it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/bin.js';
import { HOOK, MANIFEST, hookInstallation } from '../support/hook-install.js';
import { TAG, addTag, integrationStacks, runnableVirtTypeOn, undefineQuietly, virsh, virshOk } from '../support/libvirt.js';

const TAGGED = 'sevx-test-hook-tagged';
const SEV = 'sevx-test-hook-sev';
const PLAIN = 'sevx-test-hook-plain';
// Tagged domains are always kvm: an SEV guest must be, and both stacks' set-ups make libvirt
// offer kvm even where /dev/kvm is missing (the host's file may already be gone when the
// Debian 13 run loads this file); they are refused or fail before QEMU would need KVM.
const VIRT = 'kvm';

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
  const hook = hookInstallation(stack, work);
  let capsFile = '';

  /** `virsh start` etc. that must fail; returns what the user sees. */
  const virshFails = (args: string[]): string => {
    const r = virshS(args);
    assert.is.not(r.code, 0, `virsh ${args.join(' ')} succeeded; it must be refused`);
    return r.stderr;
  };

  test(stack.label('install.sh installs the hook into /etc/libvirt/hooks/qemu.d, with a host cache, and libvirtd restarts'), () => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name, stack);
    capsFile = hook.install();
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
    const conv = runBin(['--domcaps', capsFile, '-'], { input: TAGGED_XML.replace(TAGGED, SEV) });
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
    writeFileSync(file, smallDomain(PLAIN, 64, '', runnableVirtTypeOn(stack)));
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
    const problems = hook.uninstall();
    assert.equal(problems, []);
    assert.not.ok(existsSync(host(HOOK)), `${host(HOOK)} is still there`);
    assert.not.ok(existsSync(host(MANIFEST)), `${host(MANIFEST)} is still there`);
  });

  // Also after a failure half-way: no test domain, hook or daemon restart is left behind.
  cleanups.push(() => {
    for (const name of [TAGGED, SEV, PLAIN]) undefineQuietly(name, stack);
    rmSync(work, { recursive: true, force: true });
    rmSync(host(savedDir), { recursive: true, force: true });
    const problems = hook.uninstall();
    if (problems.length > 0) console.error(`[${stack.name}] hook.test.ts clean-up: ${problems.join('; ')}`);
  });
}

test.after(() => {
  for (const cleanup of cleanups) cleanup();
});
if (stacks.length > 0) test.run();
