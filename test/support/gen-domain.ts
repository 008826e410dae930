// fast-check generator of libvirt domain XML for the property tests: random
// device mixes and buses, boot orders, memory units, existing <driver>
// elements, the sev-xform tag (or none), machine types, and random layout
// (indentation, line ends, quotes). The model is plain data, so fast-check
// can shrink a failing domain to a small one; `renderDomain` writes it out.
import fc from 'fast-check';

export type Attrs = Array<[string, string]>;

/** An element to render: text content, child elements, or neither (self-closing). */
export interface El {
  name: string;
  attrs: Attrs;
  text?: string;
  children?: Array<El | { comment: string }>;
}

export interface Layout {
  /** One indentation step; '' writes the whole document on one line. */
  indent: '' | '  ' | '    ' | '\t';
  newline: '\n' | '\r\n';
  quote: "'" | '"';
  declaration: boolean;
  finalNewline: boolean;
}

const el = (name: string, attrs: Attrs = [], content?: string | Array<El | { comment: string }>): El =>
  typeof content === 'string' ? { name, attrs, text: content } : content ? { name, attrs, children: content } : { name, attrs };

/** Attributes that are present (value not undefined), in order. */
const present = (pairs: Array<[string, string | undefined]>): Attrs => pairs.filter((p): p is [string, string] => p[1] !== undefined);

// ------------------------------------------------------------------ devices

type DiskBus = 'virtio' | 'ide' | 'sata' | 'scsi' | 'usb';

interface DiskModel {
  kind: 'disk';
  device: 'disk' | 'cdrom';
  bus: DiskBus;
  /** False: the target has no bus attribute and libvirt infers it from the name (vd*, hd*, sd*). */
  busAttr: boolean;
  driver: Attrs | undefined;
  source: boolean;
  bootOrder: number | undefined;
  address: boolean;
  /** disk@model, only meaningful on virtio. */
  model: string | undefined;
  serial: string | undefined;
}

interface DeviceModel {
  kind: string;
  el: El;
}

/** `arb` one time in `oneIn`, else undefined. */
const rarely = <T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: oneIn - 1 }, { arbitrary: arb, weight: 1 });

const driverAttrs = (pool: Array<[string, readonly string[]]>): fc.Arbitrary<Attrs | undefined> =>
  fc.option(
    fc.subarray(pool, { minLength: 1 }).chain((picked) =>
      fc.tuple(...picked.map(([name, values]) => fc.constantFrom(...values).map((v): [string, string] => [name, v]))),
    ).map((pairs) => pairs as Attrs),
    { nil: undefined, freq: 2 },
  );

const DISK_DRIVER: Array<[string, readonly string[]]> = [
  ['name', ['qemu']],
  ['type', ['raw', 'qcow2']],
  ['cache', ['none', 'writeback']],
  ['io', ['native', 'threads']],
  ['discard', ['unmap']],
  ['queues', ['2', '4']],
  ['iothread', ['1']],
  ['iommu', ['on', 'off']],
  ['ats', ['on']],
];

const diskArb: fc.Arbitrary<DiskModel> = fc
  .record({
    device: fc.constantFrom('disk', 'disk', 'cdrom') as fc.Arbitrary<'disk' | 'cdrom'>,
    bus: fc.constantFrom<DiskBus>('virtio', 'ide', 'sata', 'scsi', 'usb'),
    busAttr: fc.boolean(),
    driver: driverAttrs(DISK_DRIVER),
    source: fc.boolean(),
    bootOrder: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    address: fc.boolean(),
    model: fc.option(fc.constantFrom('virtio', 'virtio-non-transitional'), { nil: undefined, freq: 4 }),
    serial: rarely(fc.constantFrom('SN-1', 'config-2'), 4),
  })
  .map((d) => ({ kind: 'disk' as const, ...d, busAttr: d.busAttr || !['virtio', 'ide', 'scsi'].includes(d.bus), model: d.bus === 'virtio' ? d.model : undefined }));

const pciAddress = (slot: number): El =>
  el('address', [['type', 'pci'], ['domain', '0x0000'], ['bus', '0x00'], ['slot', `0x${slot.toString(16).padStart(2, '0')}`], ['function', '0x0']]);

const nicArb: fc.Arbitrary<DeviceModel> = fc
  .record({
    type: fc.constantFrom('network', 'bridge', 'user'),
    model: fc.option(fc.constantFrom('virtio', 'virtio', 'e1000', 'e1000e', 'rtl8139', 'virtio-non-transitional'), { nil: undefined, freq: 6 }),
    driver: driverAttrs([['name', ['vhost', 'qemu']], ['queues', ['2', '4']], ['rx_queue_size', ['256']], ['iommu', ['off']], ['packed', ['on']]]),
    rom: fc.option(fc.constantFrom<Attrs>([['bar', 'on']], [['bar', 'off']], [['enabled', 'yes']], [['file', '/usr/share/ipxe/1af41000.rom']], [['enabled', 'no']]), { nil: undefined, freq: 3 }),
    // A NIC boot order is refused for SEV; rarely, so most runs convert.
    bootOrder: rarely(fc.integer({ min: 1, max: 6 }), 15),
    address: fc.option(fc.integer({ min: 3, max: 31 }), { nil: undefined }),
    mac: fc.integer({ min: 0, max: 255 }),
  })
  .map((n) => {
    const kids: El[] = [el('mac', [['address', `52:54:00:12:34:${n.mac.toString(16).padStart(2, '0')}`]])];
    if (n.type === 'network') kids.push(el('source', [['network', 'default']]));
    if (n.type === 'bridge') kids.push(el('source', [['bridge', 'br0']]));
    if (n.model) kids.push(el('model', [['type', n.model]]));
    if (n.driver) kids.push(el('driver', n.driver));
    if (n.bootOrder !== undefined) kids.push(el('boot', [['order', String(n.bootOrder)]]));
    if (n.rom) kids.push(el('rom', n.rom));
    if (n.address !== undefined) kids.push(pciAddress(n.address));
    return { kind: 'interface', el: el('interface', [['type', n.type]], kids) };
  });

const controllerArb: fc.Arbitrary<DeviceModel> = fc
  .oneof(
    fc.record({ type: fc.constant('usb'), model: fc.option(fc.constantFrom('piix3-uhci', 'piix4-uhci', 'qemu-xhci', 'ich9-ehci1', 'nec-xhci'), { nil: undefined, freq: 4 }) }),
    fc.record({ type: fc.constant('pci'), model: fc.constantFrom('pci-root', 'pcie-root', 'pcie-root-port', 'pci-bridge') as fc.Arbitrary<string | undefined> }),
    fc.record({ type: fc.constant('scsi'), model: fc.option(fc.constantFrom('virtio-scsi', 'lsilogic', 'virtio-non-transitional'), { nil: undefined, freq: 4 }) }),
    fc.record({ type: fc.constantFrom('ide', 'sata', 'virtio-serial', 'ccid'), model: fc.constant(undefined) }),
  )
  .chain((c) =>
    fc.record({
      driver: c.type === 'scsi' || c.type === 'virtio-serial' ? driverAttrs([['queues', ['2', '4']], ['iothread', ['1']], ['iommu', ['off', 'on']]]) : fc.constant(undefined),
      address: fc.option(fc.integer({ min: 1, max: 31 }), { nil: undefined }),
      ports: fc.option(fc.constantFrom('15', '4'), { nil: undefined, freq: 4 }),
    }).map((x) => {
      const kids: El[] = [];
      if (x.driver) kids.push(el('driver', x.driver));
      if (x.address !== undefined && !(c.type === 'pci' && c.model?.endsWith('-root'))) kids.push(pciAddress(x.address));
      const attrs = present([['type', c.type], ['model', c.model], ['ports', c.type === 'usb' ? x.ports : undefined]]);
      return { kind: 'controller', el: el('controller', attrs, kids.length ? kids : undefined) };
    }),
  );

const channelArb: fc.Arbitrary<DeviceModel> = fc
  .record({
    kind: fc.constantFrom('channel-agent', 'channel-spice', 'console-serial', 'console-virtio', 'serial'),
    address: fc.boolean(),
  })
  .map(({ kind, address }) => {
    switch (kind) {
      case 'channel-agent':
        return { kind: 'channel', el: el('channel', [['type', 'unix']], [el('target', [['type', 'virtio'], ['name', 'org.qemu.guest_agent.0']]), ...(address ? [el('address', [['type', 'virtio-serial'], ['controller', '0'], ['bus', '0'], ['port', '1']])] : [])]) };
      case 'channel-spice':
        return { kind: 'channel', el: el('channel', [['type', 'spicevmc']], [el('target', [['type', 'virtio'], ['name', 'com.redhat.spice.0']])]) };
      case 'console-serial':
        return { kind: 'console', el: el('console', [['type', 'pty']], [el('target', [['type', 'serial'], ['port', '0']])]) };
      case 'console-virtio':
        return { kind: 'console', el: el('console', [['type', 'pty']], [el('target', [['type', 'virtio'], ['port', '1']])]) };
      default:
        return { kind: 'serial', el: el('serial', [['type', 'pty']], [el('target', [['type', 'isa-serial'], ['port', '0']], [el('model', [['name', 'isa-serial']])])]) };
    }
  });

const videoArb: fc.Arbitrary<DeviceModel> = fc
  .record({
    type: fc.constantFrom('qxl', 'virtio', 'vga', 'cirrus', 'bochs', 'none'),
    sizes: fc.subarray(['ram', 'vram', 'vgamem'] as const).chain((names) =>
      fc.tuple(...names.map((n) => fc.constantFrom('16384', '65536', '8192').map((v): [string, string] => [n, v]))),
    ),
    heads: fc.boolean(),
    driver: driverAttrs([['iommu', ['off']]]),
    address: fc.option(fc.integer({ min: 1, max: 31 }), { nil: undefined }),
  })
  .map((v) => {
    const kids: El[] = [];
    if (v.driver && v.type === 'virtio') kids.push(el('driver', v.driver));
    const model: Attrs = [['type', v.type], ...(v.type === 'none' ? [] : (v.sizes as Attrs))];
    if (v.heads && v.type !== 'none') model.push(['heads', '1'], ['primary', 'yes']);
    kids.push(el('model', model));
    if (v.address !== undefined && v.type !== 'none') kids.push(pciAddress(v.address));
    return { kind: 'video', el: el('video', [], kids) };
  });

const balloonArb: fc.Arbitrary<DeviceModel> = fc
  .record({
    model: fc.constantFrom('virtio', 'virtio', 'virtio-transitional', 'none'),
    stats: fc.boolean(),
    driver: driverAttrs([['iommu', ['off']], ['ats', ['on']]]),
    address: fc.option(fc.integer({ min: 1, max: 31 }), { nil: undefined }),
  })
  .map((b) => {
    const kids: El[] = [];
    if (b.model !== 'none') {
      if (b.stats) kids.push(el('stats', [['period', '10']]));
      if (b.address !== undefined) kids.push(pciAddress(b.address));
      if (b.driver) kids.push(el('driver', b.driver));
    }
    return { kind: 'memballoon', el: el('memballoon', [['model', b.model]], kids.length ? kids : undefined) };
  });

const rngArb: fc.Arbitrary<DeviceModel> = fc
  .record({ rate: fc.boolean(), driver: driverAttrs([['iommu', ['off']]]), address: fc.option(fc.integer({ min: 1, max: 31 }), { nil: undefined }) })
  .map((r) => {
    const kids: El[] = [];
    if (r.rate) kids.push(el('rate', [['bytes', '1024'], ['period', '1000']]));
    kids.push(el('backend', [['model', 'random']], '/dev/urandom'));
    if (r.driver) kids.push(el('driver', r.driver));
    if (r.address !== undefined) kids.push(pciAddress(r.address));
    return { kind: 'rng', el: el('rng', [['model', 'virtio']], kids) };
  });

const inputArb: fc.Arbitrary<DeviceModel> = fc
  .record({ type: fc.constantFrom('tablet', 'mouse', 'keyboard'), bus: fc.constantFrom('usb', 'ps2', 'virtio'), driver: fc.boolean() })
  .map((i) => {
    const bus = i.type === 'tablet' && i.bus === 'ps2' ? 'usb' : i.bus;
    const kids = i.driver && bus === 'virtio' ? [el('driver', [['iommu', 'off']])] : undefined;
    return { kind: 'input', el: el('input', [['type', i.type], ['bus', bus]], kids) };
  });

const filesystemArb: fc.Arbitrary<DeviceModel> = fc
  .record({ driver: fc.option(fc.constantFrom<Attrs>([['type', 'virtiofs']], [['type', 'virtiofs'], ['queue', '1024']], [['type', 'path'], ['wrpolicy', 'immediate']]), { nil: undefined, freq: 4 }), n: fc.integer({ min: 0, max: 9 }) })
  .map((f) => {
    const kids: El[] = [];
    if (f.driver) kids.push(el('driver', f.driver));
    kids.push(el('source', [['dir', `/srv/share${f.n}`]]), el('target', [['dir', `share${f.n}`]]));
    return { kind: 'filesystem', el: el('filesystem', [['type', 'mount'], ['accessmode', 'passthrough']], kids) };
  });

const hostdevArb: fc.Arbitrary<DeviceModel> = fc
  // PCI and mdev passthrough are refused for SEV; rarely, so most runs convert.
  .constantFrom('usb', 'usb', 'usb', 'usb', 'usb', 'usb', 'usb', 'usb', 'pci', 'mdev')
  .map((type) => {
    const source =
      type === 'usb'
        ? el('source', [], [el('vendor', [['id', '0x046d']]), el('product', [['id', '0xc52b']])])
        : type === 'pci'
          ? el('source', [], [el('address', [['domain', '0x0000'], ['bus', '0x03'], ['slot', '0x00'], ['function', '0x0']])])
          : el('source', [], [el('address', [['uuid', 'c2177883-f1bb-47f0-914d-32a22e3a8804']])]);
    const attrs: Attrs = [['mode', 'subsystem'], ['type', type], ...(type === 'usb' ? [] : ([['managed', 'yes']] as Attrs))];
    return { kind: 'hostdev', el: el('hostdev', attrs, [source]) };
  });

const otherArb: fc.Arbitrary<DeviceModel> = fc.constantFrom<DeviceModel>(
  { kind: 'graphics', el: el('graphics', [['type', 'vnc'], ['port', '-1'], ['autoport', 'yes']], [el('listen', [['type', 'address']])]) },
  { kind: 'graphics', el: el('graphics', [['type', 'spice'], ['autoport', 'yes']]) },
  { kind: 'sound', el: el('sound', [['model', 'ich9']]) },
  { kind: 'watchdog', el: el('watchdog', [['model', 'i6300esb'], ['action', 'reset']]) },
  { kind: 'vsock', el: el('vsock', [['model', 'virtio']], [el('cid', [['auto', 'yes']])]) },
  { kind: 'tpm', el: el('tpm', [['model', 'tpm-crb']], [el('backend', [['type', 'emulator'], ['version', '2.0']])]) },
  // Elements and attributes no rule knows: must come through untouched.
  { kind: 'unknown', el: el('x-future-device', [['model', 'virtio'], ['mode', 'fast']], [el('driver', [['queues', '2']]), el('x-sub', [], 'text &amp; more')]) },
);

type AnyDevice = DiskModel | DeviceModel;

const isDisk = (d: AnyDevice): d is DiskModel => 'bus' in d;

const deviceArb: fc.Arbitrary<AnyDevice> = fc.oneof(
  { arbitrary: diskArb, weight: 5 },
  { arbitrary: nicArb, weight: 2 },
  { arbitrary: controllerArb, weight: 3 },
  { arbitrary: channelArb, weight: 2 },
  { arbitrary: videoArb, weight: 1 },
  { arbitrary: balloonArb, weight: 1 },
  { arbitrary: rngArb, weight: 1 },
  { arbitrary: inputArb, weight: 1 },
  { arbitrary: filesystemArb, weight: 1 },
  { arbitrary: hostdevArb, weight: 1 },
  { arbitrary: otherArb, weight: 1 },
);

// ------------------------------------------------------------------ the domain

export interface DomainModel {
  type: string;
  tag: { policy?: string; model?: string; prefix: string } | undefined;
  foreignMetadata: boolean;
  memory: { value: number; unit: string | undefined };
  currentMemory: boolean;
  maxMemory: boolean;
  memtune: Array<[string, number, string | undefined]>;
  memoryBacking: string[];
  arch: boolean;
  machine: string | undefined;
  firmware: 'none' | 'efi-attr' | 'bios-loader' | 'ovmf-loader';
  bootDevs: string[];
  /** Children of <features>; null: no <features> at all. */
  features: string[] | null;
  vmcoreinfo: string | undefined | null;
  launchSecurity: boolean;
  devices: AnyDevice[];
  comments: boolean;
  /** Elements (by document order, modulo the count) that get an attribute no rule knows. */
  unknownAttrs: number[];
  /** Container elements that get a child element, or a comment, no rule knows. */
  unknownChildren: number[];
  extraComments: number[];
  /** Comments in the elements rules insert into (devices, os, features, memtune, memoryBacking). */
  targetComments: number[];
  layout: Layout;
  options: string[];
}

/** libvirt's scaled-integer units, and how many KiB one of each is. */
export const MEMORY_UNITS: Array<[string | undefined, number]> = [
  [undefined, 1], ['KiB', 1], ['k', 1], ['MiB', 1024], ['M', 1024], ['GiB', 1024 * 1024], ['G', 1024 * 1024],
  ['b', 1 / 1024], ['bytes', 1 / 1024], ['KB', 1000 / 1024], ['MB', 1e6 / 1024], ['GB', 1e9 / 1024],
];

const memoryArb = fc.constantFrom(...MEMORY_UNITS).chain(([unit, kib]) =>
  // Between 256 MiB and 16 GiB, as a whole number in the unit.
  fc.integer({ min: Math.ceil((256 * 1024) / kib), max: Math.min(0x7fffffff, Math.floor((16 * 1024 * 1024) / kib)) }).map((value) => ({ value, unit })),
);

const layoutArb: fc.Arbitrary<Layout> = fc.record({
  indent: fc.constantFrom('' as const, '  ' as const, '    ' as const, '\t' as const),
  newline: fc.constantFrom('\n' as const, '\n' as const, '\r\n' as const),
  quote: fc.constantFrom("'" as const, '"' as const),
  declaration: fc.boolean(),
  finalNewline: fc.boolean(),
});

export const domainModelArb: fc.Arbitrary<DomainModel> = fc.record({
  type: fc.oneof({ arbitrary: fc.constant('kvm'), weight: 24 }, { arbitrary: fc.constant('qemu'), weight: 1 }),
  tag: fc.option(
    fc.record({
      settings: fc.oneof(
        { arbitrary: fc.constant({}), weight: 12 },
        {
          arbitrary: fc.constantFrom<{ policy?: string; model?: string }>({ policy: '0x0033' }, { policy: '0x33' }, { policy: '0x0003' }, { policy: '0x0031' }, { model: 'sev' }, { model: 'sev', policy: '0x0033' }),
          weight: 12,
        },
        // Refused: a bad value, or SEV-ES, for which the test host has no slots.
        { arbitrary: fc.constantFrom<{ policy?: string; model?: string }>({ policy: '0x0037' }, { policy: 'zzz' }, { model: 'sev-es' }, { model: 'tdx' }, { model: 'sev', policy: '0x0037' }), weight: 4 },
      ),
      prefix: fc.constantFrom('sev', 'x', ''),
    }).map(({ settings, prefix }) => ({ ...settings, prefix })),
    { nil: undefined, freq: 4 },
  ),
  foreignMetadata: fc.boolean(),
  memory: memoryArb,
  currentMemory: fc.boolean(),
  maxMemory: fc.boolean(),
  memtune: fc.subarray(['hard_limit', 'soft_limit', 'swap_hard_limit']).chain((names) =>
    fc.tuple(...names.map((n) => fc.tuple(fc.constant(n), fc.integer({ min: 1, max: 64 }), fc.constantFrom<string | undefined>(undefined, 'KiB', 'MiB', 'GiB')))),
  ),
  memoryBacking: fc.constantFrom<string[]>([], [], [], ['hugepages'], ['locked'], ['hugepages', 'locked'], ['source', 'access']),
  arch: fc.boolean(),
  machine: fc.constantFrom('pc-i440fx-7.2', 'pc-i440fx-2.11', 'pc-q35-7.2', 'q35', 'pc', undefined),
  firmware: fc.constantFrom('none' as const, 'none' as const, 'efi-attr' as const, 'bios-loader' as const, 'ovmf-loader' as const),
  bootDevs: fc.oneof(
    { arbitrary: fc.constantFrom<string[]>([], ['hd'], ['cdrom', 'hd'], ['hd', 'cdrom']), weight: 24 },
    { arbitrary: fc.constant<string[]>(['network']), weight: 1 },
  ),
  features: fc.constantFrom<string[] | null>(['acpi', 'apic'], ['acpi', 'apic'], ['apic'], ['pae'], null),
  vmcoreinfo: fc.constantFrom<string | undefined | null>(null, null, undefined, 'on', 'off'),
  launchSecurity: fc.constantFrom(false, false, false, true),
  devices: fc.array(deviceArb, { maxLength: 14 }),
  comments: fc.boolean(),
  unknownAttrs: fc.array(fc.nat(999), { maxLength: 4 }),
  unknownChildren: fc.array(fc.nat(999), { maxLength: 3 }),
  extraComments: fc.array(fc.nat(999), { maxLength: 2 }),
  targetComments: fc.array(fc.nat(999), { maxLength: 2 }),
  layout: layoutArb,
  options: fc.constantFrom<string[]>(
    [], [], [], [],
    ['--memory-pinning', 'locked'],
    ['--memory-pinning', 'hard-limit'],
    ['--policy', '0x0033'],
    ['--firmware', '/usr/share/OVMF/OVMF_CODE_4M.fd'],
  ),
});

// ------------------------------------------------------------------ building

const TAG_NS = 'urn:sev-xform:domain:1';

function scsiLetters(n: number): string {
  let s = '';
  for (let k = n + 1; k > 0; k = Math.floor((k - 1) / 26)) s = String.fromCharCode(97 + ((k - 1) % 26)) + s;
  return s;
}

/** Turns the model into an element tree; disk names and boot orders are made unique here. */
export function buildDomain(m: DomainModel, tagged = m.tag !== undefined): El {
  const kids: Array<El | { comment: string }> = [el('name', [], 'gen-vm'), el('uuid', [], '4dea22b3-1d52-d8f3-2516-782e98ab3fa0')];
  const metadata: El[] = [];
  if (m.foreignMetadata)
    metadata.push(el('libosinfo:libosinfo', [['xmlns:libosinfo', 'http://libosinfo.org/xmlns/libvirt/domain/1.0']], [el('libosinfo:os', [['id', 'http://debian.org/debian/12']])]));
  if (tagged && m.tag) {
    const name = m.tag.prefix ? `${m.tag.prefix}:sev` : 'sev';
    const xmlns = m.tag.prefix ? `xmlns:${m.tag.prefix}` : 'xmlns';
    metadata.push(el(name, present([[xmlns, TAG_NS], ['policy', m.tag.policy], ['model', m.tag.model]])));
  }
  if (metadata.length) kids.push(el('metadata', [], metadata));
  if (m.maxMemory) kids.push(el('maxMemory', [['slots', '16'], ['unit', 'GiB']], '32'));
  kids.push(el('memory', present([['unit', m.memory.unit]]), String(m.memory.value)));
  if (m.currentMemory) kids.push(el('currentMemory', present([['unit', m.memory.unit]]), String(m.memory.value)));
  if (m.memtune.length) kids.push(el('memtune', [], m.memtune.map(([n, v, unit]) => el(n, present([['unit', unit]]), String(v)))));
  if (m.memoryBacking.length) {
    kids.push(
      el('memoryBacking', [], m.memoryBacking.map((n) => (n === 'source' ? el('source', [['type', 'memfd']]) : n === 'access' ? el('access', [['mode', 'shared']]) : el(n)))),
    );
  }
  kids.push(el('vcpu', [['placement', 'static']], '2'));

  const deviceBoot = m.devices.some((d) => isDisk(d) && d.bootOrder !== undefined);
  const os: El[] = [el('type', present([['arch', m.arch ? 'x86_64' : undefined], ['machine', m.machine]]), 'hvm')];
  if (m.firmware === 'bios-loader') os.push(el('loader', [['type', 'rom']], '/usr/share/seabios/bios.bin'));
  if (m.firmware === 'ovmf-loader') {
    os.push(el('loader', [['readonly', 'yes'], ['type', 'pflash']], '/usr/share/OVMF/OVMF_CODE_4M.fd'));
    os.push(el('nvram', [], '/var/lib/libvirt/qemu/nvram/gen-vm_VARS.fd'));
  }
  // libvirt forbids <os><boot> together with per-device boot orders.
  if (!deviceBoot) for (const dev of m.bootDevs) os.push(el('boot', [['dev', dev]]));
  kids.push(el('os', present([['firmware', m.firmware === 'efi-attr' ? 'efi' : undefined]]), os));

  const features: El[] = (m.features ?? []).map((n) => el(n));
  if (m.vmcoreinfo !== null) features.push(el('vmcoreinfo', present([['state', m.vmcoreinfo]])));
  if (m.features !== null || features.length) kids.push(el('features', [], features));
  kids.push(el('cpu', [['mode', 'host-passthrough'], ['check', 'none']]));
  kids.push(el('clock', [['offset', 'utc']], [el('timer', [['name', 'rtc'], ['tickpolicy', 'catchup']])]));
  kids.push(el('on_poweroff', [], 'destroy'), el('on_reboot', [], 'restart'), el('on_crash', [], 'destroy'));

  const devices: Array<El | { comment: string }> = [el('emulator', [], '/usr/bin/qemu-system-x86_64')];
  if (m.comments) devices.push({ comment: ' devices follow ' });
  const used = { vd: 0, hd: 0, sd: 0 };
  const bootOrders = new Set<number>();
  const indexes = new Map<string, number>();
  let unit = 0;
  for (const d of m.devices) {
    if (!isDisk(d)) {
      const dev = d;
      if (dev.el.name === 'controller') {
        // Controller indexes are unique per type, as libvirt requires.
        const type = dev.el.attrs.find((a) => a[0] === 'type')![1];
        const index = indexes.get(type) ?? 0;
        indexes.set(type, index + 1);
        const attrs = dev.el.attrs.map((a): [string, string] => a);
        attrs.splice(1, 0, ['index', String(index)]);
        devices.push({ ...dev.el, attrs });
      } else devices.push(dev.el);
      continue;
    }
    const disk = d;
    const prefix = disk.bus === 'virtio' ? 'vd' : disk.bus === 'ide' ? 'hd' : 'sd';
    const dev = prefix + scsiLetters(used[prefix]++);
    const dk: El[] = [];
    if (disk.driver) dk.push(el('driver', disk.driver));
    if (disk.source) dk.push(el('source', [['file', `/var/lib/libvirt/images/${dev}.${disk.device === 'cdrom' ? 'iso' : 'qcow2'}`]]));
    dk.push(el('target', present([['dev', dev], ['bus', disk.busAttr ? disk.bus : undefined]])));
    if (disk.device === 'cdrom') dk.push(el('readonly'));
    if (disk.serial) dk.push(el('serial', [], disk.serial));
    if (disk.bootOrder !== undefined && !bootOrders.has(disk.bootOrder)) {
      bootOrders.add(disk.bootOrder);
      dk.push(el('boot', [['order', String(disk.bootOrder)]]));
    }
    if (disk.address) {
      if (disk.bus === 'virtio') dk.push(pciAddress(8 + used.vd));
      else if (disk.bus !== 'usb') dk.push(el('address', [['type', 'drive'], ['controller', '0'], ['bus', '0'], ['target', '0'], ['unit', String(unit++)]]));
    }
    devices.push(el('disk', present([['type', 'file'], ['device', disk.device], ['model', disk.model]]), dk));
  }
  if (m.comments) devices.push({ comment: ' end of devices ' });
  kids.push(el('devices', [], devices));
  if (m.launchSecurity) kids.push(el('launchSecurity', [['type', 'sev']], [el('policy', [], '0x0033')]));
  // A copy: the arbitraries share element objects, which addUnknowns must not change.
  const domain = structuredClone(el('domain', [['type', m.type]], kids));
  addUnknowns(domain, m);
  return domain;
}

/** Sprinkles attributes, elements and comments that no rule knows over the tree. */
function addUnknowns(domain: El, m: DomainModel): void {
  const all: El[] = [];
  const walk = (e: El): void => {
    all.push(e);
    for (const c of e.children ?? []) if (!('comment' in c)) walk(c);
  };
  walk(domain);
  // Elements with text content keep it as their only content.
  const containers = all.filter((e) => e.text === undefined);
  m.unknownAttrs.forEach((n, k) => all[n % all.length]!.attrs.push([`x-keep${k}`, `v${n}`]));
  m.unknownChildren.forEach((n, k) => (containers[n % containers.length]!.children ??= []).push(el('x-keep', [['n', String(k)]], [el('x-inner', [['deep', 'yes']])])));
  m.extraComments.forEach((n, k) => (containers[n % containers.length]!.children ??= []).unshift({ comment: ` note ${k} ` }));
  const devices = domain.children?.find((c): c is El => !('comment' in c) && c.name === 'devices');
  const targets = [
    ...(domain.children ?? []).filter((c): c is El => !('comment' in c) && ['os', 'features', 'memtune', 'memoryBacking'].includes(c.name)),
    ...(devices?.children ?? []).filter((c): c is El => !('comment' in c) && c.text === undefined),
  ];
  m.targetComments.forEach((n, k) => (targets[n % targets.length]!.children ??= []).push({ comment: ` target note ${k} ` }));
}

// ------------------------------------------------------------------ rendering

function escapeAttr(value: string, quote: "'" | '"'): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(quote === "'" ? /'/g : /"/g, quote === "'" ? '&apos;' : '&quot;');
}

export function renderDomain(root: El, layout: Layout): string {
  const nl = layout.indent === '' ? '' : layout.newline;
  const q = layout.quote;
  const out: string[] = [];
  if (layout.declaration) out.push(`<?xml version=${q}1.0${q} encoding=${q}UTF-8${q}?>`, nl || layout.newline);
  const write = (node: El | { comment: string }, depth: number): void => {
    const pad = layout.indent.repeat(depth);
    if ('comment' in node) {
      out.push(`${pad}<!--${node.comment}-->${nl}`);
      return;
    }
    const attrs = node.attrs.map(([k, v]) => ` ${k}=${q}${escapeAttr(v, q)}${q}`).join('');
    if (node.text !== undefined) out.push(`${pad}<${node.name}${attrs}>${node.text}</${node.name}>${nl}`);
    else if (!node.children || node.children.length === 0) out.push(`${pad}<${node.name}${attrs}/>${nl}`);
    else {
      out.push(`${pad}<${node.name}${attrs}>${nl}`);
      for (const c of node.children) write(c, depth + 1);
      out.push(`${pad}</${node.name}>${nl}`);
    }
  };
  write(root, 0);
  let xml = out.join('');
  if (nl && !layout.finalNewline) xml = xml.slice(0, -nl.length);
  if (!nl && layout.finalNewline) xml += layout.newline;
  return xml;
}

export interface GeneratedDomain {
  model: DomainModel;
  /** The domain as generated (tagged when model.tag is set). */
  xml: string;
  /** The same domain without the tag. */
  untagged: string;
  /** Extra command-line options for this run. */
  options: string[];
}

export const domainArb: fc.Arbitrary<GeneratedDomain> = domainModelArb.map((model) => ({
  model,
  xml: renderDomain(buildDomain(model), model.layout),
  untagged: renderDomain(buildDomain(model, false), model.layout),
  options: model.options,
}));
