// Helpers for the integration tests against the real libvirtd that
// test/integration/host/setup.sh starts: virsh, the libvirt schema, and reading
// the QEMU command line libvirt would run.
import { shellWords } from './shell.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { BIN } from './bin.js';

export const URI = 'qemu:///system';
export const FIXTURES = 'fixtures';

/**
 * Integration tests run only under `npm test` as root, which sets
 * SEV_XFORM_INTEGRATION=1 after bringing the test libvirtd up; otherwise the
 * file registers nothing and says so in one line.
 */
export function integrationEnabled(file: string): boolean {
  if (process.env['SEV_XFORM_INTEGRATION'] === '1') return true;
  console.log(`integration: ${file} skipped (run via npm test as root, which sets SEV_XFORM_INTEGRATION=1 and starts the test libvirtd)`);
  return false;
}

/**
 * Whether guests can run under KVM here: /dev/kvm is the real character
 * device. Where it is missing, setup.sh puts a plain file there so that libvirt
 * offers domain type 'kvm' (SEV guests need it); such domains define and
 * render, but QEMU cannot start them ("failed to initialize kvm").
 */
export function kvmRunnable(): boolean {
  try {
    return statSync('/dev/kvm').isCharacterDevice();
  } catch {
    return false;
  }
}

/** The domain type for a guest a test starts: kvm when KVM really runs here, else qemu (TCG). */
export function runnableVirtType(): 'kvm' | 'qemu' {
  return kvmRunnable() ? 'kvm' : 'qemu';
}

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

export function virsh(args: readonly string[], input?: string): Run {
  return run('virsh', ['-c', URI, ...args], input === undefined ? {} : { input });
}

/** virsh that must succeed; the error carries virsh's own message. */
export function virshOk(args: readonly string[], input?: string): string {
  const r = virsh(args, input);
  if (r.code !== 0) throw new Error(`virsh ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Fails loudly when something the integration tests need is missing. */
export function requirePrerequisites(tools: readonly string[] = []): void {
  if (process.getuid?.() !== 0) throw new Error('the integration tests need root (they use the system libvirtd)');
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it first (node scripts/build.mjs)`);
  for (const tool of ['virsh', 'virt-xml-validate', 'xmlstarlet', ...tools]) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${tool} is not installed (test/integration/host/setup.sh installs it)`);
  }
  const v = virsh(['version']);
  if (v.code !== 0) throw new Error(`libvirtd does not answer on ${URI} (run test/integration/host/setup.sh): ${v.stderr.trim()}`);
}

// ---------------------------------------------------------------- fixtures

export interface LibvirtCase {
  name: string;
  dir: string;
  out: string;
  /** Why libvirt 9.0 cannot take this case (skip-libvirt.txt), if so. */
  skip?: string;
}

/** Every golden case that has an out.xml. */
export function libvirtCases(): LibvirtCase[] {
  return readdirSync(FIXTURES)
    .filter((d) => existsSync(join(FIXTURES, d, 'out.xml')))
    .sort()
    .map((name) => {
      const dir = join(FIXTURES, name);
      const skipFile = join(dir, 'skip-libvirt.txt');
      const c: LibvirtCase = { name, dir, out: join(dir, 'out.xml') };
      if (existsSync(skipFile)) c.skip = readFileSync(skipFile, 'utf8').trim();
      return c;
    });
}

function caseArgs(c: LibvirtCase): string[] {
  const argsFile = join(c.dir, 'args.json');
  return existsSync(argsFile) ? (JSON.parse(readFileSync(argsFile, 'utf8')) as string[]) : [];
}

/** The firmware descriptor folders the case was converted against (args.json --firmware-dirs), if any. */
export function caseFirmwareDirs(c: LibvirtCase): string[] {
  const args = caseArgs(c);
  const i = args.indexOf('--firmware-dirs');
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]!.split(',').filter(Boolean) : [];
}

/** Does the golden case ask for an SEV guest: tagged input, or converted with --all? */
export function caseWantsSev(c: LibvirtCase): boolean {
  const input = readFileSync(join(c.dir, 'in.xml'), 'utf8');
  return input.includes('urn:sev-xform:domain:1') || caseArgs(c).includes('--all');
}

// ---------------------------------------------------------------- XML

export const TAG = '<sev:sev xmlns:sev="urn:sev-xform:domain:1"/>';

/** Adds the sev-xform tag to <metadata>, creating that after <uuid> (or <name>) when there is none. */
export function addTag(xml: string): string {
  if (xml.includes('</metadata>')) return xml.replace('</metadata>', `  ${TAG}\n  </metadata>`);
  if (xml.includes('<metadata/>')) return xml.replace('<metadata/>', `<metadata>\n    ${TAG}\n  </metadata>`);
  const anchor = xml.includes('</uuid>') ? '</uuid>' : '</name>';
  if (!xml.includes(anchor)) throw new Error('no <metadata>, <uuid> or <name> to put the tag after');
  return xml.replace(anchor, `${anchor}\n  <metadata>\n    ${TAG}\n  </metadata>`);
}

export interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string;
  child(name: string): El | undefined;
  all(name: string): El[];
}

type Ordered = Record<string, unknown>;

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  processEntities: true,
});

function toEl(node: Ordered): El | undefined {
  const name = Object.keys(node).find((k) => k !== ':@');
  if (name === undefined || name.startsWith('#') || name.startsWith('?')) return undefined;
  const kids = (node[name] as Ordered[] | undefined) ?? [];
  const children: El[] = [];
  let text = '';
  for (const k of kids) {
    if ('#text' in k) text += String(k['#text']);
    else {
      const e = toEl(k);
      if (e) children.push(e);
    }
  }
  const attrs = (node[':@'] as Record<string, string> | undefined) ?? {};
  return {
    name,
    attrs,
    children,
    text,
    child: (n) => children.find((c) => c.name === n),
    all: (n) => children.filter((c) => c.name === n),
  };
}

export function parseXml(text: string): El {
  const doc = parser.parse(text) as Ordered[];
  for (const node of doc) {
    const e = toEl(node);
    if (e) return e;
  }
  throw new Error('no root element');
}

// ---------------------------------------------------------------- libvirt copies

/** The one emulator whose capability cache setup.sh patches to claim SEV. */
export const EMULATOR = '/usr/bin/qemu-system-x86_64';

/**
 * A domain as the tests define it: named sevx-test-<case> (teardown.sh removes
 * those) without uuid, so nothing collides. Host-specific parts are rewritten
 * to what this test host has:
 * - the nvram file is renamed likewise, because `undefine --nvram` deletes it
 *   and a fixture's path may be a real domain's on a developer's host;
 * - the emulator becomes the SEV-patched one (a fixture's /usr/bin/kvm is a
 *   symlink to it, but libvirt caches capabilities per path);
 * - USB host devices are dropped: libvirt resolves vendor/product to a device
 *   present on the host when it builds the command line, and none is here.
 * Disk images, ISOs and block devices need not exist: neither define nor
 * domxml-to-native opens them.
 */
export function libvirtCopy(xmlFile: string, name: string, dest: string): void {
  const r = run('xmlstarlet', [
    'ed',
    '-u', '/domain/name', '-v', name,
    '-d', '/domain/uuid',
    '-u', '/domain/os/nvram', '-v', `/var/lib/libvirt/qemu/nvram/${name}_VARS.fd`,
    '-u', '/domain/devices/emulator', '-v', EMULATOR,
    '-d', "/domain/devices/hostdev[@type='usb']",
    xmlFile,
  ]);
  if (r.code !== 0) throw new Error(`xmlstarlet ed ${xmlFile}: ${r.stderr.trim()}`);
  writeFileSync(dest, r.stdout);
}

/**
 * Network disks name libvirt secrets (ceph, iscsi auth) that domxml-to-native
 * looks up, value included; defines the missing ones as ephemeral secrets with
 * a dummy value. Returns the cleanup, which undefines only those.
 */
export function provideSecrets(domain: El): () => void {
  const created: string[] = [];
  const disks = domain.child('devices')?.all('disk') ?? [];
  for (const disk of disks) {
    const secret = (disk.child('auth') ?? disk.child('source')?.child('auth'))?.child('secret');
    const uuid = secret?.attrs['uuid'];
    if (!secret || uuid === undefined || created.includes(uuid)) continue;
    if (virsh(['secret-dumpxml', uuid]).code === 0) continue;
    const type = secret.attrs['type'] ?? 'ceph';
    const usage = type === 'iscsi' ? `<target>sevx-test-${uuid}</target>` : `<name>sevx-test-${uuid}</name>`;
    const file = join(tmpdir(), `sevx-test-secret-${uuid}.xml`);
    const value = join(tmpdir(), `sevx-test-secret-${uuid}.value`);
    writeFileSync(file, `<secret ephemeral='yes' private='yes'><uuid>${uuid}</uuid><usage type='${type}'>${usage}</usage></secret>\n`);
    writeFileSync(value, 'sevx-test');
    try {
      virshOk(['secret-define', file]);
      created.push(uuid);
      virshOk(['secret-set-value', uuid, '--file', value, '--plain']);
    } finally {
      rmSync(file, { force: true });
      rmSync(value, { force: true });
    }
  }
  return () => {
    for (const uuid of created) virsh(['secret-undefine', uuid]);
  };
}

const SYSTEM_FIRMWARE = '/usr/share/qemu/firmware';
const OVERLAY_FIRMWARE = '/etc/qemu/firmware';

/**
 * Makes libvirt see the firmware descriptors of `dir` (a golden case's
 * --firmware-dirs, e.g. an SEV-ES host's) by overriding the system descriptors
 * that differ, in /etc/qemu/firmware (same file name wins there). Refuses to
 * replace a descriptor it did not put there. Returns the cleanup.
 */
export function overlayFirmware(dir: string): () => void {
  const files: string[] = [];
  const dirs: string[] = [];
  const cleanup = (): void => {
    for (const f of files.splice(0)) rmSync(f, { force: true });
    // Only folders this call created, innermost first; they hold nothing else.
    for (const d of dirs.splice(0).reverse()) rmdirSync(d);
  };
  const differing = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .filter((f) => !existsSync(join(SYSTEM_FIRMWARE, f)) || !readFileSync(join(SYSTEM_FIRMWARE, f)).equals(readFileSync(join(dir, f))));
  try {
    for (const d of differing.length > 0 ? ['/etc/qemu', OVERLAY_FIRMWARE] : []) {
      if (!existsSync(d)) {
        mkdirSync(d);
        dirs.push(d);
      }
    }
    for (const file of differing) {
      const want = readFileSync(join(dir, file));
      const target = join(OVERLAY_FIRMWARE, file);
      if (existsSync(target)) throw new Error(`${target} exists and is not the test's: cannot emulate ${join(dir, file)}`);
      writeFileSync(target, want);
      files.push(target);
    }
  } catch (e) {
    cleanup();
    throw e;
  }
  return cleanup;
}

/** Removes a test domain and its nvram; quiet when it does not exist. */
export function undefineQuietly(name: string): void {
  if (virsh(['domstate', name]).code !== 0) return;
  virsh(['destroy', name]);
  virsh(['undefine', name, '--nvram', '--managed-save']);
}

export function validateSchema(file: string): Run {
  return run('virt-xml-validate', [file, 'domain']);
}

// ---------------------------------------------------------------- QEMU argv

export type Props = Record<string, unknown>;

/** A -device/-object/-machine value: QEMU's JSON form, or the legacy `first,key=value` form. */
export function qemuProps(value: string, firstKey: string): Props {
  if (value.startsWith('{')) return JSON.parse(value) as Props;
  const props: Props = {};
  // ",," is an escaped comma in QEMU's option syntax.
  const parts = value.replace(/,,/g, '\u0000').split(',');
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    const unescape = (s: string): string => s.replace(/\u0000/g, ',');
    if (eq < 0) {
      if (i === 0) props[firstKey] = unescape(p);
      else props[unescape(p)] = 'on';
    } else props[unescape(p.slice(0, eq))] = unescape(p.slice(eq + 1));
  });
  return props;
}

export interface QemuCommand {
  words: string[];
  machine: Props;
  objects: Props[];
  devices: Props[];
  blockdevs: Props[];
}

export function parseQemuArgv(text: string): QemuCommand {
  const words = shellWords(text.trim());
  const machine: Props = {};
  const objects: Props[] = [];
  const devices: Props[] = [];
  const blockdevs: Props[] = [];
  for (let i = 0; i < words.length - 1; i++) {
    const flag = words[i];
    const value = words[i + 1]!;
    if (flag === '-machine') Object.assign(machine, qemuProps(value, 'type'));
    else if (flag === '-object') objects.push(qemuProps(value, 'qom-type'));
    else if (flag === '-device') devices.push(qemuProps(value, 'driver'));
    else if (flag === '-blockdev') blockdevs.push(qemuProps(value, 'driver'));
  }
  if (!words.some((w) => w.includes('qemu-system'))) throw new Error(`not a QEMU command line: ${text.slice(0, 200)}`);
  return { words, machine, objects, devices, blockdevs };
}

// ---------------------------------------------------------------- what a rendered SEV guest must show

export interface SevExpectation {
  cbitpos: number;
  reducedPhysBits: number;
  policy: number;
}

/** The values QEMU must get: from launchSecurity, cbitpos/reducedPhysBits falling back to the host's (as libvirt does). */
export function sevExpectation(domain: El, domcaps: El): SevExpectation | undefined {
  const ls = domain.child('launchSecurity');
  if (!ls) return undefined;
  const sev = domcaps.child('features')?.child('sev');
  const num = (s: string | undefined): number => (s === undefined ? NaN : Number(s.trim()));
  const policy = ls.child('policy')?.text.trim() ?? '';
  return {
    cbitpos: num(ls.child('cbitpos')?.text ?? sev?.child('cbitpos')?.text),
    reducedPhysBits: num(ls.child('reducedPhysBits')?.text ?? sev?.child('reducedPhysBits')?.text),
    policy: Number.parseInt(policy.replace(/^0x/i, ''), 16),
  };
}

const VIRTIO_NIC_MODELS = new Set(['virtio', 'virtio-transitional', 'virtio-non-transitional']);
/** Drivers of a hard disk as QEMU sees it. */
const HARD_DISK_DRIVERS = /^(scsi-hd|scsi-block|ide-hd|virtio-blk-pci.*|usb-storage|nvme|floppy)$/;

function driverOf(d: Props): string {
  return String(d['driver'] ?? '');
}

/** virtio devices that QEMU builds, except the NIC, which domxml-to-native rewrites (checked on the defined XML instead). */
export function isVirtioDevice(d: Props): boolean {
  const driver = driverOf(d);
  return /^(virtio|vhost)-/.test(driver) && !/^virtio-net/.test(driver);
}

/** The disk the firmware boots: lowest bootindex among hard disks, else the first hard disk. */
export function bootDiskDevice(cmd: QemuCommand): Props | undefined {
  const disks = cmd.devices.filter((d) => HARD_DISK_DRIVERS.test(driverOf(d)));
  const indexed = disks.filter((d) => typeof d['bootindex'] === 'number' || typeof d['bootindex'] === 'string');
  indexed.sort((a, b) => Number(a['bootindex']) - Number(b['bootindex']));
  return indexed[0] ?? disks[0];
}

/** The file or host behind a disk device, followed through its -blockdev chain, for messages. */
function diskSource(cmd: QemuCommand, device: Props): string {
  let node: unknown = device['drive'];
  for (let depth = 0; depth < 4 && typeof node === 'string'; depth++) {
    const b = cmd.blockdevs.find((x) => x['node-name'] === node);
    if (!b) break;
    const where = b['filename'] ?? b['image'] ?? b['export'] ?? b['path'];
    if (where !== undefined) return String(where);
    node = b['file'];
  }
  return 'source unknown';
}

function hasHardDisk(domain: El): boolean {
  return (domain.child('devices')?.all('disk') ?? []).some((d) => (d.attrs['device'] ?? 'disk') === 'disk');
}

/**
 * Everything wrong with how libvirt took a domain: `cmd` is its
 * domxml-to-native argv, `defined` its `virsh dumpxml --inactive`. With
 * `sev` undefined the domain must stay an ordinary guest.
 */
export function renderProblems(domain: El, defined: El, cmd: QemuCommand, sev: SevExpectation | undefined): string[] {
  const problems: string[] = [];
  const sevObjects = cmd.objects.filter((o) => o['qom-type'] === 'sev-guest');
  const cgs = cmd.machine['confidential-guest-support'];
  if (!sev) {
    if (sevObjects.length > 0 || cgs !== undefined) problems.push(`an sev-guest object or confidential-guest-support in a domain that is not SEV (machine ${JSON.stringify(cmd.machine)})`);
    return problems;
  }
  if (sevObjects.length !== 1) problems.push(`expected one sev-guest object, found ${sevObjects.length}`);
  const obj = sevObjects[0];
  if (obj) {
    const want: Props = { id: 'lsec0', cbitpos: sev.cbitpos, 'reduced-phys-bits': sev.reducedPhysBits, policy: sev.policy };
    for (const [k, v] of Object.entries(want))
      if (String(obj[k]) !== String(v)) problems.push(`sev-guest ${k} is ${JSON.stringify(obj[k])}, launchSecurity says ${JSON.stringify(v)}`);
  }
  if (cgs !== 'lsec0') problems.push(`-machine confidential-guest-support is ${JSON.stringify(cgs)}, expected "lsec0"`);
  if (!String(cmd.machine['type'] ?? '').includes('q35')) problems.push(`machine type ${JSON.stringify(cmd.machine['type'])} is not q35`);

  for (const d of cmd.devices.filter(isVirtioDevice))
    if (d['iommu_platform'] !== true && d['iommu_platform'] !== 'on') problems.push(`${driverOf(d)} (id ${String(d['id'])}) has no iommu_platform=true`);
  // QEMU refuses a transitional virtio device with iommu_platform, and an SEV guest's balloon gets no driver.
  for (const d of cmd.devices) {
    if (/-transitional$/.test(driverOf(d)) && !/-non-transitional$/.test(driverOf(d))) problems.push(`${driverOf(d)} (id ${String(d['id'])}) is transitional: QEMU refuses it with iommu_platform`);
    // On q35's root bus QEMU keeps a legacy-capable virtio device transitional unless it is the
    // -non-transitional variant (virtio-input/-gpu/-vga and vhost-user-fs are virtio 1.0 only).
    if (d['bus'] === 'pcie.0' && /^virtio-(blk|net|scsi|serial|rng|9p)-pci$/.test(driverOf(d)))
      problems.push(`${driverOf(d)} (id ${String(d['id'])}) on pcie.0 stays transitional: QEMU refuses it with iommu_platform`);
    if (/^virtio-balloon/.test(driverOf(d))) problems.push(`${driverOf(d)} (id ${String(d['id'])}): an SEV guest's balloon must be <memballoon model='none'/>`);
  }
  if (defined.child('devices')?.child('memballoon')?.attrs['model'] !== 'none') problems.push("virsh dumpxml has no <memballoon model='none'/>: libvirt would add a virtio balloon");

  for (const nic of defined.child('devices')?.all('interface') ?? []) {
    const model = nic.child('model')?.attrs['type'];
    if (model === undefined || !VIRTIO_NIC_MODELS.has(model)) continue;
    const mac = nic.child('mac')?.attrs['address'] ?? '?';
    if (nic.child('driver')?.attrs['iommu'] !== 'on') problems.push(`virtio interface ${mac} has no <driver iommu='on'/> in virsh dumpxml`);
    if (nic.child('rom')?.attrs['enabled'] !== 'no') problems.push(`virtio interface ${mac} has no <rom enabled='no'/> in virsh dumpxml`);
  }

  if (hasHardDisk(domain)) {
    const boot = bootDiskDevice(cmd);
    const what = boot ? `the boot disk ${driverOf(boot)} (id ${String(boot['id'])}, ${diskSource(cmd, boot)})` : '';
    if (!boot) problems.push('the domain has a disk but QEMU gets no hard disk device');
    else if (/^virtio-blk/.test(driverOf(boot))) problems.push(`${what} is virtio-blk; it must be on virtio-scsi`);
    else if (/^scsi-/.test(driverOf(boot))) {
      const controllerId = String(boot['bus'] ?? '').replace(/\.\d+$/, '');
      const controller = cmd.devices.find((d) => d['id'] === controllerId);
      if (!controller || !/^virtio-scsi-pci/.test(driverOf(controller)))
        problems.push(`${what} sits on ${controllerId} (${controller ? driverOf(controller) : 'no such device'}), not on a virtio-scsi-pci controller`);
    } else if (driverOf(boot) !== 'ide-hd') problems.push(`${what} is neither on virtio-scsi nor SATA`);
    // ide-hd on q35 is a disk on the ICH9 AHCI (SATA) controller, which the rules keep as a boot disk.
  }
  return problems;
}

export interface Rendered {
  defined: El;
  cmd: QemuCommand;
  argv: string;
}

/**
 * Defines `file` (already renamed to `name`, parsed as `domain`), reads back
 * what libvirt stored and the QEMU command line it would run, and undefines it
 * again.
 */
export function defineAndRender(file: string, name: string, domain: El): Rendered {
  undefineQuietly(name);
  const removeSecrets = provideSecrets(domain);
  try {
    virshOk(['define', file]);
    try {
      const defined = parseXml(virshOk(['dumpxml', '--inactive', name]));
      const argv = virshOk(['domxml-to-native', 'qemu-argv', '--domain', name]);
      return { defined, cmd: parseQemuArgv(argv), argv };
    } finally {
      virshOk(['undefine', name, '--nvram']);
    }
  } finally {
    removeSecrets();
  }
}

/** A short summary of a QEMU command line for failure messages: machine, SEV object and devices. */
export function describeCommand(cmd: QemuCommand): string {
  const sev = cmd.objects.filter((o) => o['qom-type'] === 'sev-guest').map((o) => JSON.stringify(o));
  const devices = cmd.devices.map((d) => `${driverOf(d)}#${String(d['id'] ?? '?')}${d['iommu_platform'] === true ? '+iommu' : ''}${d['bus'] ? `@${String(d['bus'])}` : ''}${d['bootindex'] !== undefined ? ` boot${String(d['bootindex'])}` : ''}`);
  return `machine: ${JSON.stringify(cmd.machine)}\nsev-guest: ${sev.join(' ') || 'none'}\ndevices: ${devices.join(', ')}`;
}
