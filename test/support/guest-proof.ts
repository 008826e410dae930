// Reads what the boot test's guest (test/integration/guest/init.sh) printed on
// its serial port, and what OVMF printed before it, into facts the boot test
// checks: virtio devices with their driver and negotiated features, block
// devices and the virtio device under each, the UEFI boot entry it came from.

/** virtio device ids (virtio spec 1.2, 5 "Device Types") of the devices libvirt makes. */
export const VIRTIO_DEVICE_NAMES: Record<number, string> = {
  1: 'net',
  2: 'block',
  3: 'console',
  4: 'rng',
  5: 'balloon',
  8: 'scsi',
  9: '9p',
  16: 'gpu',
  18: 'input',
  19: 'vsock',
  26: 'fs',
};

/** Feature bits, counted from the left of sysfs' `features` string. */
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;

export interface VirtioProof {
  /** sysfs name, e.g. virtio3 */
  name: string;
  deviceId: number;
  /** bound driver, or 'none' */
  driver: string;
  features: string;
  /** NUMA node of the PCI device it sits on, as sysfs says ('-1' for none) */
  numaNode: string;
}

export interface BlockProof {
  /** sda, sda1, sr0, vda */
  name: string;
  /** the virtio device it sits on (sysfs name), or 'none' */
  on: string;
  /** printable text in its first 64 bytes */
  first: string;
}

export interface DevicePathNode {
  type: number;
  subType: number;
  data: number[];
}

export interface BootEntry {
  number: string;
  description: string;
  path: DevicePathNode[];
}

export interface GuestProof {
  /** the guest's /init started and reached its last line */
  begun: boolean;
  done: boolean;
  cmdline: string;
  virtio: VirtioProof[];
  blocks: BlockProof[];
  efi: boolean | undefined;
  /** efivarfs contents without the 4 attribute bytes */
  efivars: Map<string, number[]>;
  dmesg: string[];
  /** the whole log, control sequences removed, for messages */
  text: string;
}

/** Removes terminal control sequences (OVMF and GRUB draw with them) and carriage returns. */
export function plainText(raw: string): string {
  // eslint-disable-next-line no-control-regex
  return raw.replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, '').replace(/\x1b[()][0-9A-Za-z]/g, '').replace(/\r/g, '');
}

function hexBytes(words: string[]): number[] {
  return words.map((w) => {
    if (!/^[0-9a-f]{2}$/i.test(w)) throw new Error(`not a hex byte: ${w}`);
    return Number.parseInt(w, 16);
  });
}

export function parseSerialLog(raw: string): GuestProof {
  const text = plainText(raw);
  const proof: GuestProof = { begun: false, done: false, cmdline: '', virtio: [], blocks: [], efi: undefined, efivars: new Map(), dmesg: [], text };
  for (const line of text.split('\n')) {
    // A kernel message can land in front of a proof line on the same serial line.
    const at = line.indexOf('SEVX ');
    if (at < 0) continue;
    const body = line.slice(at + 5).trim();
    const [kind = '', ...rest] = body.split(' ');
    if (kind === 'begin') {
      proof.begun = true;
      const c = body.indexOf('cmdline=');
      if (c >= 0) proof.cmdline = body.slice(c + 8);
    } else if (kind === 'done') proof.done = true;
    else if (kind === 'virtio') {
      const m = /^(\S+) device=0x([0-9a-f]+) driver=(\S+) features=([01]+) numa=(\S+)$/i.exec(rest.join(' '));
      if (m) proof.virtio.push({ name: m[1]!, deviceId: Number.parseInt(m[2]!, 16), driver: m[3]!, features: m[4]!, numaNode: m[5]! });
    } else if (kind === 'block') {
      const m = /^(\S+) on=(\S+) path=\S* first=(.*)$/.exec(rest.join(' '));
      if (m) proof.blocks.push({ name: m[1]!, on: m[2]!, first: m[3]!.trim() });
    } else if (kind === 'efi') proof.efi = rest[0] === 'yes';
    else if (kind === 'efivar' && rest[0] !== undefined) proof.efivars.set(rest[0], hexBytes(rest.slice(1)).slice(4));
    else if (kind === 'dmesg') proof.dmesg.push(rest.join(' '));
  }
  return proof;
}

/** A little-endian UEFI variable value as a number (BootCurrent, SecureBoot). */
export function efiNumber(bytes: readonly number[] | undefined): number | undefined {
  if (!bytes || bytes.length === 0) return undefined;
  return bytes.reduceRight((n, b) => n * 256 + b, 0);
}

/** Parses an EFI_LOAD_OPTION (UEFI 2.10, 3.1.3): attributes, path length, UCS-2 description, device path. */
export function parseLoadOption(number: string, bytes: readonly number[]): BootEntry {
  const u16 = (i: number): number => (bytes[i] ?? 0) | ((bytes[i + 1] ?? 0) << 8);
  const pathLength = u16(4);
  let i = 6;
  let description = '';
  for (; i + 1 < bytes.length; i += 2) {
    const ch = u16(i);
    if (ch === 0) break;
    description += String.fromCharCode(ch);
  }
  i += 2;
  const path: DevicePathNode[] = [];
  const end = Math.min(bytes.length, i + pathLength);
  while (i + 4 <= end) {
    const type = bytes[i]!;
    const subType = bytes[i + 1]!;
    const len = u16(i + 2);
    if (type === 0x7f && subType === 0xff) break;
    if (len < 4) throw new Error(`Boot${number}: device path node of length ${len}`);
    path.push({ type, subType, data: bytes.slice(i + 4, i + len) });
    i += len;
  }
  return { number, description: description.trim(), path };
}

/** The entry BootCurrent names, parsed; undefined when the guest printed none. */
export function currentBootEntry(proof: GuestProof): BootEntry | undefined {
  const current = efiNumber(proof.efivars.get('BootCurrent'));
  if (current === undefined) return undefined;
  const number = current.toString(16).toUpperCase().padStart(4, '0');
  const bytes = proof.efivars.get(`Boot${number}`);
  return bytes ? parseLoadOption(number, bytes) : { number, description: '', path: [] };
}

/** UEFI device path node kinds the test looks for (UEFI 2.10, 10.3). */
export const isScsiNode = (n: DevicePathNode): boolean => n.type === 3 && n.subType === 2;
export const isMacNode = (n: DevicePathNode): boolean => n.type === 3 && n.subType === 11;
export const isIpv4Node = (n: DevicePathNode): boolean => n.type === 3 && n.subType === 12;

/** A device path in UEFI's text form, for the node kinds seen here. */
export function devicePathText(path: readonly DevicePathNode[]): string {
  const hex = (n: number): string => `0x${n.toString(16)}`;
  return path
    .map((n) => {
      const d = n.data;
      if (n.type === 2 && n.subType === 1) return 'PciRoot';
      if (n.type === 1 && n.subType === 1) return `Pci(${hex(d[1] ?? 0)},${hex(d[0] ?? 0)})`;
      if (isScsiNode(n)) return `Scsi(${hex((d[0] ?? 0) | ((d[1] ?? 0) << 8))},${hex((d[2] ?? 0) | ((d[3] ?? 0) << 8))})`;
      if (isMacNode(n)) return `MAC(${d.slice(0, 6).map((b) => b.toString(16).padStart(2, '0')).join('')})`;
      if (isIpv4Node(n)) return 'IPv4';
      return `Node(${n.type},${n.subType})`;
    })
    .join('/');
}

/** The feature bit as sysfs prints it ('1' negotiated). */
export function hasFeature(v: VirtioProof, bit: number): boolean {
  return v.features[bit] === '1';
}

/** What OVMF's boot manager said it started ("BdsDxe: starting Boot0001 "..." from PATH"), in order. */
export function firmwareBootLines(proof: GuestProof): string[] {
  return proof.text.split('\n').filter((l) => l.includes('BdsDxe: starting Boot'));
}
