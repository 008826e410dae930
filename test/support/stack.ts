// The libvirt/QEMU stacks the integration tests run against:
// - debian12: the machine's own libvirtd (Debian 12: libvirt 9.0, QEMU 7.2),
//   brought up by test/integration/host/setup.sh;
// - debian13: a Debian 13 chroot (libvirt 11, QEMU 10) with its own libvirtd in
//   private mount and network namespaces, brought up by trixie-setup.sh.
// A stack says how to reach its daemon, whose schema to validate against, and
// where its files are, so one test body runs against either.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command; a missing program is an error, never a silent skip. */
export function run(cmd: string, args: readonly string[], opts: { input?: string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(cmd, args, {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C', ...opts.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export type StackName = 'debian12' | 'debian13';
export const STACK_NAMES: readonly StackName[] = ['debian12', 'debian13'];

export interface Versions {
  libvirt: string;
  qemu: string;
  ovmf: string;
}

export interface Stack {
  name: StackName;
  /** virsh -c URI reaching this stack's libvirtd (the host's virsh client is used for both). */
  uri: string;
  /** Where the stack's root file system is on the host: '/' or the chroot. */
  root: string;
  /** Host path of a path inside the stack (what its libvirtd sees as `path`). */
  hostPath(path: string): string;
  /** The firmware descriptor folders as the filter must read them (--firmware-dirs, host paths), lowest priority first. */
  firmwareDirs: readonly string[];
  /** Where a test may put descriptors that override the stack's own (host path). */
  firmwareOverlayDir: string;
  /** virt-xml-validate FILE domain with this stack's libvirt schema; FILE is a host path. */
  validateSchema(file: string): Run;
  virsh(args: readonly string[], input?: string): Run;
  /** Daemon, QEMU and OVMF versions, read from the running stack. */
  versions(): Versions;
  /** Does this stack's libvirt have at least `version` (e.g. "9.1.0")? */
  libvirtAtLeast(version: string): boolean;
  /** `[debian13] title`: every test says which stack it ran on. */
  label(title: string): string;
  /**
   * Runs a program of the stack as its libvirtd sees the system (debian13: in
   * the daemon's mount namespace and root, so paths are the chroot's and /proc,
   * /sys, /dev are there).
   */
  run(cmd: string, args: readonly string[], opts?: { input?: string; env?: Record<string, string> }): Run;
  /** The host argv that runs `argv` as run() does, for a caller that spawns it itself (e.g. after joining a cgroup). */
  argv(argv: readonly string[]): string[];
  /** A host path inside the stack's root as the stack's programs see it (the inverse of hostPath). */
  innerPath(hostPath: string): string;
  /**
   * The stack's own virt-install connected to its daemon: Debian 12's on the
   * host, Debian 13's inside the chroot (as run() runs it). Paths in `args`
   * are the stack's.
   */
  virtInstall(args: readonly string[]): Run;
  /** Restarts the stack's libvirtd (e.g. so that it finds a new hook), keeping the SEV emulation. */
  restart(): Run;
  /** Environment for install.sh to install into this stack (DESTDIR for a chroot). */
  installEnv: Record<string, string>;
}

const TRIXIE_ROOT = process.env['SEVX_TRIXIE_ROOT'] ?? '/var/cache/sev-xform-test/trixie';
const TRIXIE_STATE = process.env['SEVX_TRIXIE_STATE_DIR'] ?? '/run/sev-xform-test-trixie';

/** "11.3.0" -> [11, 3, 0] */
function versionParts(v: string): number[] {
  return v.split(/[.+~-]/).map((p) => Number.parseInt(p, 10)).filter((n) => !Number.isNaN(n));
}

export function compareVersions(a: string, b: string): number {
  const x = versionParts(a);
  const y = versionParts(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

interface StackParts {
  validate: (file: string) => Run;
  argv: (argv: readonly string[]) => string[];
  restart: () => Run;
  installEnv: Record<string, string>;
}

function makeStack(name: StackName, uri: string, root: string, parts: StackParts): Stack {
  const hostPath = (path: string): string => (root === '/' ? path : join(root, path));
  let versions: Versions | undefined;
  const stack: Stack = {
    name,
    uri,
    root,
    hostPath,
    firmwareDirs: [hostPath('/usr/share/qemu/firmware'), hostPath('/etc/qemu/firmware')],
    firmwareOverlayDir: hostPath('/etc/qemu/firmware'),
    validateSchema: parts.validate,
    argv: parts.argv,
    run: (cmd, args, opts) => {
      const [first, ...rest] = parts.argv([cmd, ...args]);
      return run(first!, rest, opts);
    },
    innerPath: (path) => {
      if (root === '/') return path;
      if (path !== root && !path.startsWith(`${root}/`)) throw new Error(`[${name}] ${path} is not inside the stack's root ${root}`);
      return path.slice(root.length) || '/';
    },
    // Where virt-install runs (the host, or the chroot daemon's mount namespace), the daemon's socket is the usual one.
    virtInstall: (args) => stack.run('virt-install', ['--connect', 'qemu:///system', ...args]),
    restart: parts.restart,
    installEnv: parts.installEnv,
    virsh: (args, input) => run('virsh', ['-c', uri, ...args], input === undefined ? {} : { input }),
    versions: () => {
      if (versions) return versions;
      const v = stack.virsh(['version', '--daemon']);
      if (v.code !== 0) throw new Error(`[${name}] virsh -c ${uri} version --daemon: ${v.stderr.trim()}`);
      const daemon = /Running against daemon:\s*(\S+)/.exec(v.stdout)?.[1];
      const qemu = /Running hypervisor:\s*QEMU\s*(\S+)/.exec(v.stdout)?.[1];
      if (daemon === undefined || qemu === undefined) throw new Error(`[${name}] no daemon/QEMU version in: ${v.stdout}`);
      const ovmf = run('dpkg-query', ['--admindir', hostPath('/var/lib/dpkg'), '-W', '-f', '${Version}', 'ovmf']);
      versions = { libvirt: daemon, qemu, ovmf: ovmf.code === 0 ? ovmf.stdout.trim() : 'not installed' };
      return versions;
    },
    libvirtAtLeast: (version) => compareVersions(stack.versions().libvirt, version) >= 0,
    label: (title) => `[${name}] ${title}`,
  };
  return stack;
}

/** The machine's own libvirtd (setup.sh). */
export const DEBIAN12: Stack = makeStack('debian12', 'qemu:///system', '/', {
  validate: (file) => run('virt-xml-validate', [file, 'domain']),
  argv: (argv) => [...argv],
  restart: () => run('bash', ['test/integration/host/restart.sh']),
  installEnv: {},
});

/** The pid of the Debian 13 stack's libvirtd (trixie-setup.sh records it). */
function trixieDaemonPid(): string {
  const file = join(TRIXIE_STATE, 'libvirtd.pid');
  if (!existsSync(file)) throw new Error(`${file} is missing: the debian13 stack is not up (run test/integration/host/trixie-setup.sh)`);
  return readFileSync(file, 'utf8').trim();
}

/**
 * The Debian 13 chroot (trixie-setup.sh). virsh is the host's client on the
 * chroot daemon's socket: it reads the files it is given on the host and sends
 * their XML. The schema is the chroot's own, checked by the chroot's
 * virt-xml-validate and xmllint on a copy of the file in the chroot's /tmp.
 */
export const DEBIAN13: Stack = makeStack('debian13', `qemu+unix:///system?socket=${TRIXIE_STATE}/libvirt-sock`, TRIXIE_ROOT, {
  validate: (file) => {
    const dir = mkdtempSync(join(TRIXIE_ROOT, 'tmp', 'sevx-test-validate-'));
    try {
      const inside = join(dir, basename(file));
      writeFileSync(inside, readFileSync(file));
      return run('chroot', [TRIXIE_ROOT, 'virt-xml-validate', inside.slice(TRIXIE_ROOT.length), 'domain']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  // nsenter without -p execs in place: the pid (and so a cgroup joined before) stays the caller's.
  argv: (argv) => ['nsenter', '-t', trixieDaemonPid(), '-m', '-r', '-w', '--', ...argv],
  restart: () => run('bash', ['test/integration/host/trixie-setup.sh'], { env: { SEVX_TRIXIE_RESTART: '1' } }),
  installEnv: { DESTDIR: TRIXIE_ROOT },
});

export function stackNamed(name: string): Stack {
  if (name === 'debian12') return DEBIAN12;
  if (name === 'debian13') return DEBIAN13;
  throw new Error(`SEV_XFORM_STACKS: unknown stack '${name}' (known: ${STACK_NAMES.join(', ')})`);
}

/**
 * The stacks this run targets: SEV_XFORM_STACKS, comma-separated (scripts/test.mjs
 * sets it per run); the machine's own (debian12) when unset.
 */
export function selectedStacks(): Stack[] {
  const names = (process.env['SEV_XFORM_STACKS'] ?? 'debian12').split(',').map((s) => s.trim()).filter(Boolean);
  return [...new Set(names)].map(stackNamed);
}

/** Whether the stack's daemon is up (its socket answers); for prerequisite messages. */
export function stackReachable(stack: Stack): boolean {
  if (stack.name === 'debian13' && !existsSync(join(TRIXIE_STATE, 'libvirt-sock'))) return false;
  return stack.virsh(['version']).code === 0;
}
