// Helpers for the integration tests against a real libvirtd: the machine's own
// (test/integration/host/setup.sh) or another stack's (test/support/stack.ts):
// virsh, the libvirt schema, and reading the QEMU command line libvirt would run.
// Every helper that talks to libvirt takes the stack last, the machine's own
// (debian12) by default.
import { shellWords } from './shell.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { BIN } from './bin.js';
import { DEBIAN12, run, selectedStacks, type Run, type Stack } from './stack.js';

export { run, type Run, type Stack } from './stack.js';

export const FIXTURES = 'fixtures';

const NOT_ENABLED = '(run via npm test as root, which sets SEV_XFORM_INTEGRATION=1 and starts the test libvirtd)';

/**
 * The type for a domain that must really start on the stack: kvm only where its
 * /dev/kvm is the real device (a plain file there only makes libvirt offer kvm;
 * QEMU then fails "Could not access KVM kernel module"), else TCG.
 */
export function runnableVirtTypeOn(stack: Stack): 'kvm' | 'qemu' {
  return stack.run('test', ['-c', '/dev/kvm']).code === 0 ? 'kvm' : 'qemu';
}

/**
 * For files that run against every selected stack (SEV_XFORM_STACKS, see
 * test/support/stack.ts): the stacks to register tests for, none (with one
 * line saying why) outside `npm test`.
 */
export function integrationStacks(file: string): Stack[] {
  if (process.env['SEV_XFORM_INTEGRATION'] === '1') return selectedStacks();
  console.log(`integration: ${file} skipped ${NOT_ENABLED}`);
  return [];
}

export function virsh(args: readonly string[], input?: string, stack: Stack = DEBIAN12): Run {
  return stack.virsh(args, input);
}

/** virsh that must succeed; the error carries virsh's own message. */
export function virshOk(args: readonly string[], input?: string, stack: Stack = DEBIAN12): string {
  const r = stack.virsh(args, input);
  if (r.code !== 0) throw new Error(`[${stack.name}] virsh ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

const SETUP: Record<Stack['name'], string> = {
  debian12: 'test/integration/host/setup.sh',
  debian13: 'test/integration/host/trixie-setup.sh',
};

/** Fails loudly when something the integration tests need is missing. */
export function requirePrerequisites(tools: readonly string[] = [], stack: Stack = DEBIAN12): void {
  if (process.getuid?.() !== 0) throw new Error('the integration tests need root (they use the system libvirtd)');
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it first (node scripts/build.mjs)`);
  for (const tool of ['virsh', 'virt-xml-validate', 'xmlstarlet', ...tools]) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${tool} is not installed (test/integration/host/setup.sh installs it)`);
  }
  const v = stack.virsh(['version']);
  if (v.code !== 0) throw new Error(`[${stack.name}] libvirtd does not answer on ${stack.uri} (run ${SETUP[stack.name]}): ${v.stderr.trim()}`);
}

/** The stack's domcapabilities for q35 (kvm), read once per stack. */
const domcapsCache = new Map<string, string>();
export function stackDomcaps(stack: Stack = DEBIAN12): string {
  let caps = domcapsCache.get(stack.name);
  if (caps === undefined) {
    caps = virshOk(['domcapabilities', '--machine', 'q35'], undefined, stack);
    domcapsCache.set(stack.name, caps);
  }
  return caps;
}

// ---------------------------------------------------------------- fixtures

export interface LibvirtCase {
  name: string;
  dir: string;
  out: string;
  /**
   * The oldest libvirt that takes this case, and why (min-libvirt.txt: the
   * version on the first line, the reason after it), if it needs a newer one
   * than every stack has.
   */
  minLibvirt?: { version: string; reason: string };
}

/** Every golden case that has an out.xml. */
export function libvirtCases(): LibvirtCase[] {
  return readdirSync(FIXTURES)
    .filter((d) => existsSync(join(FIXTURES, d, 'out.xml')))
    .sort()
    .map((name) => {
      const dir = join(FIXTURES, name);
      const minFile = join(dir, 'min-libvirt.txt');
      // The per-stack min-libvirt.txt replaced it: a leftover would silently run a case the old way.
      if (existsSync(join(dir, 'skip-libvirt.txt'))) throw new Error(`${dir}/skip-libvirt.txt: write min-libvirt.txt instead (first line: the oldest libvirt version that takes the case, then why)`);
      const c: LibvirtCase = { name, dir, out: join(dir, 'out.xml') };
      if (existsSync(minFile)) {
        const [first = '', ...rest] = readFileSync(minFile, 'utf8').trim().split('\n');
        if (!/^\d+\.\d+\.\d+$/.test(first.trim())) throw new Error(`${minFile}: the first line must be a libvirt version (e.g. 9.1.0), not ${JSON.stringify(first)}`);
        c.minLibvirt = { version: first.trim(), reason: rest.join(' ').trim() };
      }
      return c;
    });
}

/** Why the stack cannot take the case (its libvirt is older than min-libvirt.txt says), or undefined when it can. */
export function caseSkip(c: LibvirtCase, stack: Stack): string | undefined {
  if (!c.minLibvirt || stack.libvirtAtLeast(c.minLibvirt.version)) return undefined;
  return `needs libvirt >= ${c.minLibvirt.version}, ${stack.name} has ${stack.versions().libvirt}: ${c.minLibvirt.reason}`;
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
export function provideSecrets(domain: El, stack: Stack = DEBIAN12): () => void {
  const created: string[] = [];
  const disks = domain.child('devices')?.all('disk') ?? [];
  for (const disk of disks) {
    const secret = (disk.child('auth') ?? disk.child('source')?.child('auth'))?.child('secret');
    const uuid = secret?.attrs['uuid'];
    if (!secret || uuid === undefined || created.includes(uuid)) continue;
    if (stack.virsh(['secret-dumpxml', uuid]).code === 0) continue;
    const type = secret.attrs['type'] ?? 'ceph';
    const usage = type === 'iscsi' ? `<target>sevx-test-${uuid}</target>` : `<name>sevx-test-${uuid}</name>`;
    const file = join(tmpdir(), `sevx-test-secret-${uuid}.xml`);
    const value = join(tmpdir(), `sevx-test-secret-${uuid}.value`);
    writeFileSync(file, `<secret ephemeral='yes' private='yes'><uuid>${uuid}</uuid><usage type='${type}'>${usage}</usage></secret>\n`);
    writeFileSync(value, 'sevx-test');
    try {
      virshOk(['secret-define', file], undefined, stack);
      created.push(uuid);
      virshOk(['secret-set-value', uuid, '--file', value, '--plain'], undefined, stack);
    } finally {
      rmSync(file, { force: true });
      rmSync(value, { force: true });
    }
  }
  return () => {
    for (const uuid of created) stack.virsh(['secret-undefine', uuid]);
  };
}

/**
 * Makes the stack's libvirt see the firmware descriptors of `dir` (a golden
 * case's --firmware-dirs, e.g. an SEV-ES host's) by overriding the system
 * descriptors that differ, in its /etc/qemu/firmware (same file name wins
 * there). Refuses to replace a descriptor it did not put there. Returns the
 * cleanup.
 */
export function overlayFirmware(dir: string, stack: Stack = DEBIAN12): () => void {
  const SYSTEM_FIRMWARE = stack.hostPath('/usr/share/qemu/firmware');
  const OVERLAY_FIRMWARE = stack.firmwareOverlayDir;
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
    for (const d of differing.length > 0 ? [stack.hostPath('/etc/qemu'), OVERLAY_FIRMWARE] : []) {
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
export function undefineQuietly(name: string, stack: Stack = DEBIAN12): void {
  if (stack.virsh(['domstate', name]).code !== 0) return;
  stack.virsh(['destroy', name]);
  stack.virsh(['undefine', name, '--nvram', '--managed-save']);
}

/** virt-xml-validate FILE domain against the stack's own schema. */
export function validateSchema(file: string, stack: Stack = DEBIAN12): Run {
  return stack.validateSchema(file);
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
  /** launchSecurity type: QEMU gets an sev-guest object for 'sev', an sev-snp-guest for 'sev-snp'. */
  type: 'sev' | 'sev-snp';
  /** The QEMU object's qom-type. */
  qomType: 'sev-guest' | 'sev-snp-guest';
  cbitpos: number;
  reducedPhysBits: number;
  /** The policy as QEMU gets it (decimal); 64 bits for SNP, so kept as a bigint. */
  policy: bigint;
  /** Other properties the object must carry exactly (kernel hashes, SNP's key and blob options), from launchSecurity. */
  props: Props;
}

const SEV_TYPES = { sev: 'sev-guest', 'sev-snp': 'sev-snp-guest' } as const;
const SEV_QOM_TYPES = new Set<unknown>(Object.values(SEV_TYPES));

/**
 * The values QEMU must get: from launchSecurity, cbitpos/reducedPhysBits
 * falling back to the host's (as libvirt does). For SNP also the options
 * libvirt passes through: authorKey -> author-key-enabled, vcek='no' ->
 * vcek-disabled, and the base64 blobs (libvirt's qemuBuildSEVSNPCommandLine).
 */
export function sevExpectation(domain: El, domcaps: El): SevExpectation | undefined {
  const ls = domain.child('launchSecurity');
  if (!ls) return undefined;
  const type = ls.attrs['type'];
  if (type !== 'sev' && type !== 'sev-snp') throw new Error(`launchSecurity type ${JSON.stringify(type)} is neither sev nor sev-snp`);
  const sev = domcaps.child('features')?.child('sev');
  const num = (s: string | undefined): number => (s === undefined ? NaN : Number(s.trim()));
  const policy = ls.child('policy')?.text.trim();
  const yesNo = (attr: string): boolean | undefined => (ls.attrs[attr] === undefined ? undefined : ls.attrs[attr] === 'yes');
  const props: Props = {};
  const kernelHashes = yesNo('kernelHashes');
  if (kernelHashes !== undefined) props['kernel-hashes'] = kernelHashes;
  if (type === 'sev-snp') {
    const authorKey = yesNo('authorKey');
    if (authorKey !== undefined) props['author-key-enabled'] = authorKey;
    const vcek = yesNo('vcek');
    if (vcek !== undefined) props['vcek-disabled'] = !vcek;
    const blobs = { guestVisibleWorkarounds: 'guest-visible-workarounds', idBlock: 'id-block', idAuth: 'id-auth', hostData: 'host-data' };
    for (const [element, prop] of Object.entries(blobs)) {
      const text = ls.child(element)?.text.trim();
      if (text !== undefined) props[prop] = text;
    }
  }
  return {
    type,
    qomType: SEV_TYPES[type],
    cbitpos: num(ls.child('cbitpos')?.text ?? sev?.child('cbitpos')?.text),
    reducedPhysBits: num(ls.child('reducedPhysBits')?.text ?? sev?.child('reducedPhysBits')?.text),
    // libvirt's default when <policy> is absent: 0x30000 for SNP (bit 17 set), 0x07 for SEV.
    policy: policy === undefined ? (type === 'sev-snp' ? 0x30000n : 0x07n) : BigInt(policy.startsWith('0x') || policy.startsWith('0X') ? policy : `0x${policy}`),
    props,
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
  const sevObjects = cmd.objects.filter((o) => SEV_QOM_TYPES.has(o['qom-type']));
  const cgs = cmd.machine['confidential-guest-support'];
  if (!sev) {
    if (sevObjects.length > 0 || cgs !== undefined) problems.push(`an sev-guest/sev-snp-guest object or confidential-guest-support in a domain that is not SEV (machine ${JSON.stringify(cmd.machine)})`);
    return problems;
  }
  const wrongType = sevObjects.filter((o) => o['qom-type'] !== sev.qomType);
  if (wrongType.length > 0) problems.push(`launchSecurity type='${sev.type}' rendered as ${wrongType.map((o) => String(o['qom-type'])).join(', ')}, not ${sev.qomType}`);
  const objects = sevObjects.filter((o) => o['qom-type'] === sev.qomType);
  if (objects.length !== 1) problems.push(`expected one ${sev.qomType} object, found ${objects.length}`);
  const obj = objects[0];
  if (obj) {
    const want: Props = { id: 'lsec0', cbitpos: sev.cbitpos, 'reduced-phys-bits': sev.reducedPhysBits, ...sev.props };
    for (const [k, v] of Object.entries(want))
      if (String(obj[k]) !== String(v)) problems.push(`${sev.qomType} ${k} is ${JSON.stringify(obj[k])}, launchSecurity says ${JSON.stringify(v)}`);
    // QEMU's policy is a plain JSON number; SNP's is 64 bits wide, so compare the digits.
    if (String(obj['policy']) !== sev.policy.toString()) problems.push(`${sev.qomType} policy is ${JSON.stringify(obj['policy'])}, launchSecurity says ${sev.policy} (0x${sev.policy.toString(16)})`);
    const known = new Set(['qom-type', 'id', 'cbitpos', 'reduced-phys-bits', 'policy', ...Object.keys(sev.props)]);
    const extra = Object.keys(obj).filter((k) => !known.has(k) && !['dh-cert-file', 'session-file'].includes(k));
    if (extra.length > 0) problems.push(`${sev.qomType} carries ${extra.join(', ')}, which launchSecurity does not ask for`);
  }
  if (cgs !== 'lsec0') problems.push(`-machine confidential-guest-support is ${JSON.stringify(cgs)}, expected "lsec0"`);
  if (!String(cmd.machine['type'] ?? '').includes('q35')) problems.push(`machine type ${JSON.stringify(cmd.machine['type'])} is not q35`);
  if (sev.type === 'sev-snp') {
    // SNP launches measure the firmware image, and there is no place for a
    // writable UEFI variable store in it: a stateless ROM (-bios) or a lone
    // read-only pflash0, never pflash1.
    const bios = cmd.words.indexOf('-bios');
    if (cmd.machine['pflash1'] !== undefined) problems.push(`an SEV-SNP guest got a writable NVRAM (pflash1=${String(cmd.machine['pflash1'])}); its firmware must be stateless`);
    if (bios < 0 && cmd.machine['pflash0'] === undefined) problems.push('an SEV-SNP guest got no firmware (-bios or pflash0)');
  }

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
export function defineAndRender(file: string, name: string, domain: El, stack: Stack = DEBIAN12): Rendered {
  undefineQuietly(name, stack);
  const removeSecrets = provideSecrets(domain, stack);
  try {
    virshOk(['define', file], undefined, stack);
    try {
      const defined = parseXml(virshOk(['dumpxml', '--inactive', name], undefined, stack));
      const argv = virshOk(['domxml-to-native', 'qemu-argv', '--domain', name], undefined, stack);
      return { defined, cmd: parseQemuArgv(argv), argv };
    } finally {
      virshOk(['undefine', name, '--nvram'], undefined, stack);
    }
  } finally {
    removeSecrets();
  }
}

/** A short summary of a QEMU command line for failure messages: machine, SEV object and devices. */
export function describeCommand(cmd: QemuCommand): string {
  const sev = cmd.objects.filter((o) => SEV_QOM_TYPES.has(o['qom-type'])).map((o) => JSON.stringify(o));
  const devices = cmd.devices.map((d) => `${driverOf(d)}#${String(d['id'] ?? '?')}${d['iommu_platform'] === true ? '+iommu' : ''}${d['bus'] ? `@${String(d['bus'])}` : ''}${d['bootindex'] !== undefined ? ` boot${String(d['bootindex'])}` : ''}`);
  return `machine: ${JSON.stringify(cmd.machine)}\nsev-guest/sev-snp-guest: ${sev.join(' ') || 'none'}\ndevices: ${devices.join(', ')}`;
}
