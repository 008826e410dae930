// The hook as install.sh installs it into a stack's real /etc/libvirt/hooks/qemu.d/
// (the chroot's, with DESTDIR, for debian13), with a host cache, and libvirtd
// restarted to find it; then uninstalled again, leaving the stack as it was.
// hook.test.ts and hook-attacks.test.ts both run through it.
import * as assert from 'uvu/assert';
import { accessSync, constants, existsSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runBin } from './bin.js';
import { requirePrerequisites, virshOk } from './libvirt.js';
import { run, type Run, type Stack } from './stack.js';

const INSTALL = resolve('install.sh');
/** Paths as the stack's libvirtd sees them; on the host they are stack.hostPath(...). */
export const HOOK = '/etc/libvirt/hooks/qemu.d/sev-xform';
const STATE_DIR = '/var/lib/sev-xform';
export const MANIFEST = join(STATE_DIR, 'install-manifest');
const CACHE = join(STATE_DIR, 'host.json');
/** The binary install.sh puts into the stack (PREFIX /usr/local). */
const INSTALLED_BIN = '/usr/local/bin/sev-xform';

export interface HookInstallation {
  /**
   * install.sh, the host cache, libvirtd restarted. Returns the host path of the
   * domcapabilities the cache was written from (for converting test domains).
   */
  install(): string;
  /** Undoes install(); returns what could not be undone (empty when all was). */
  uninstall(): string[];
}

export function hookInstallation(stack: Stack, work: string): HookInstallation {
  const host = (path: string): string => stack.hostPath(path);
  let installedByUs = false;
  let stateDirExisted = true;
  let restartNeeded = false;

  const restartLibvirtd = (): void => {
    const r = stack.restart();
    if (r.code !== 0) throw new Error(`[${stack.name}] restarting libvirtd: exit ${r.code}: ${r.stderr.trim()}`);
  };

  return {
    install() {
      requirePrerequisites([], stack);
      assert.ok(existsSync(INSTALL), `${INSTALL} is missing`);
      assert.not.ok(existsSync(host(MANIFEST)), `sev-xform is already installed here (${host(MANIFEST)}); the hook suites install and uninstall it themselves, so they will not run over that installation`);
      stateDirExisted = existsSync(host(STATE_DIR));
      installedByUs = true;
      const r = run('sh', [INSTALL], { env: stack.installEnv });
      assert.is(r.code, 0, `install.sh: ${r.stderr}`);
      accessSync(host(HOOK), constants.X_OK);
      assert.ok(readFileSync(host(HOOK), 'utf8').includes('SEV_XFORM='), 'the shim is installed');

      // libvirt reads maxGuests from host CPUID, so this Intel host reports 0 SEV
      // slots and the hook would rightly refuse every SEV guest; the cache gets
      // the slots of the emulated SEV host (setup.sh's SEV_MAX_GUESTS default).
      const caps = virshOk(['domcapabilities', '--arch', 'x86_64', '--machine', 'q35'], undefined, stack).replace(/<maxGuests>\d+<\/maxGuests>/, '<maxGuests>15</maxGuests>');
      assert.match(caps, /<sev supported='yes'>/);
      const capsFile = join(work, `${stack.name}-domcaps.xml`);
      writeFileSync(capsFile, caps);
      // The cache is written by the binary the hook runs, as the stack's libvirtd sees the system.
      let cache: Run | ReturnType<typeof runBin>;
      if (stack.root === '/') cache = runBin(['host', '--write-cache', '--domcaps', capsFile]);
      else {
        const inside = `/tmp/sevx-test-hook-domcaps-${stack.name}-${process.pid}.xml`;
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
      return capsFile;
    },

    uninstall() {
      const problems: string[] = [];
      if (installedByUs) {
        const r = run('sh', [INSTALL, '--uninstall'], { env: stack.installEnv });
        if (r.code !== 0) problems.push(`install.sh --uninstall: exit ${r.code}: ${r.stderr.trim()}`);
        installedByUs = false;
      }
      // install.sh lists the cache it wrote; this catches the one install() rewrote when an install failed before that.
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
    },
  };
}
