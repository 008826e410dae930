// A converted guest really boots, on every stack (test/support/stack.ts). A small guest built from Debian packages
// (test/integration/guest/: Debian's signed shim, GRUB and kernel on a GPT disk,
// and the same kernel as a unified image for the network boot) is put into
// domains by virt-install in the shapes users have, tagged, converted by the
// built dist/sev-xform against this host's domcapabilities, and defined as SEV
// guests. With no SEV (and maybe no KVM) here, a TCG copy of each converted
// domain, launchSecurity removed, is then started by libvirt. The guest prints
// what it found on its serial port and powers off; everything is judged from
// that log: booted via UEFI from the virtio-scsi disk (or over the network through
// OVMF's own virtio-net driver), the CD-ROM readable, every virtio device bound to
// a driver with VERSION_1 and ACCESS_PLATFORM (what SEV's bounce buffers need).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runBin } from '../support/bin.js';
import {
  addTag,
  defineAndRender,
  describeCommand,
  integrationStacks,
  parseXml,
  renderProblems,
  requirePrerequisites,
  run,
  sevExpectation,
  undefineQuietly,
  virsh,
  virshOk,
  type El,
  type Stack,
} from '../support/libvirt.js';
import {
  VIRTIO_DEVICE_NAMES,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_VERSION_1,
  currentBootEntry,
  devicePathText,
  efiNumber,
  firmwareBootLines,
  hasFeature,
  isMacNode,
  isScsiNode,
  parseSerialLog,
  type GuestProof,
} from '../support/guest-proof.js';

const BUILDER = resolve('test/integration/guest/build-image.sh');
/** Kept between runs on one machine; build-image.sh names it after the package versions. */
const IMAGE_CACHE = process.env['SEVX_GUEST_CACHE'] ?? '/var/cache/sev-xform-test/guest';
/** A boot takes 15-40 s under TCG here; the deadline only stops a hung guest. */
const DEADLINE_MS = 240_000;
const POLL_MS = 250;
const MEMORY_MIB = 384;
const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

interface Files {
  boot: string;
  data: string;
  cdrom: string;
}

interface Shape {
  id: string;
  /** virt-install options that make the shape, given the disk files */
  args(f: Files): string[];
  secureBoot?: boolean;
  /** boots the unified kernel image over TFTP instead of the disk */
  network?: boolean;
  /** default 1 */
  vcpus?: number;
  /** the virtio devices (by virtio device id) that sit behind an expander bus on this NUMA node */
  expander?: { node: string; virtio: number[] };
}

const disk = (path: string, opts: string): string[] => ['--disk', `path=${path},format=raw,${opts}`];
const KiB_PER_MiB = 1024;

const SHAPES: Shape[] = [
  {
    id: 'i440fx-bios-virtio-blk-ide-cdrom',
    args: (f) => ['--machine', 'pc', '--boot', 'hd', ...disk(f.boot, 'bus=virtio'), ...disk(f.data, 'bus=virtio'), ...disk(f.cdrom, 'device=cdrom,bus=ide')],
  },
  {
    // As libvirt 9.0 writes a NUMA guest's pxb: the expander on node 1 (busNr 254), the
    // pci-bridge behind it, the data disk on the expander and the NIC on the bridge.
    // After conversion they must sit on root ports of a pcie-expander-bus, still on node 1.
    id: 'i440fx-pxb-numa',
    vcpus: 2,
    expander: { node: '1', virtio: [1, 2] },
    args: (f) => [
      '--machine', 'pc', '--boot', 'hd',
      '--cpu', `host-passthrough,cell0.id=0,cell0.cpus=0,cell0.memory=${(MEMORY_MIB / 2) * KiB_PER_MiB},cell1.id=1,cell1.cpus=1,cell1.memory=${(MEMORY_MIB / 2) * KiB_PER_MiB}`,
      '--controller', 'type=pci,index=1,model=pci-expander-bus,target.busNr=254,target.node=1,address.type=pci,address.bus=0,address.slot=10',
      '--controller', 'type=pci,index=2,model=pci-bridge,address.type=pci,address.bus=1,address.slot=1',
      ...disk(f.boot, 'bus=virtio'),
      ...disk(f.data, 'bus=virtio,address.type=pci,address.bus=1,address.slot=2'),
      ...disk(f.cdrom, 'device=cdrom,bus=ide'),
      '--network', 'user,address.type=pci,address.bus=2,address.slot=1',
    ],
  },
  {
    id: 'q35-bios',
    args: (f) => ['--machine', 'q35', '--boot', 'hd', ...disk(f.boot, 'bus=virtio'), ...disk(f.data, 'bus=virtio'), ...disk(f.cdrom, 'device=cdrom,bus=sata')],
  },
  {
    id: 'q35-uefi-secureboot',
    secureBoot: true,
    args: (f) => [
      '--boot', 'uefi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=yes,firmware.feature1.name=enrolled-keys,firmware.feature1.enabled=yes',
      ...disk(f.boot, 'bus=scsi'), ...disk(f.data, 'bus=virtio'), ...disk(f.cdrom, 'device=cdrom,bus=scsi'),
      '--video', 'virtio', '--input', 'keyboard,bus=virtio',
    ],
  },
  {
    // The unified kernel image is not signed, so this shape boots with Secure Boot off.
    id: 'q35-uefi-network-boot',
    network: true,
    args: (f) => [
      '--boot', 'uefi,network,hd,firmware.feature0.name=secure-boot,firmware.feature0.enabled=no',
      ...disk(f.boot, 'bus=virtio'), ...disk(f.data, 'bus=virtio'), ...disk(f.cdrom, 'device=cdrom,bus=sata'),
    ],
  },
];

/** virtio devices (by virtio device id) libvirt gives the guest for a defined domain. */
function expectedVirtio(domain: El): Map<number, number> {
  const counts = new Map<number, number>();
  const add = (id: number): void => void counts.set(id, (counts.get(id) ?? 0) + 1);
  const devices = domain.child('devices');
  const isVirtioModel = (m: string | undefined): boolean => m !== undefined && /^virtio/.test(m);
  for (const d of devices?.all('disk') ?? []) if (d.child('target')?.attrs['bus'] === 'virtio') add(2);
  for (const c of devices?.all('controller') ?? []) {
    if (c.attrs['type'] === 'scsi' && (c.attrs['model'] ?? '').startsWith('virtio-scsi')) add(8);
    if (c.attrs['type'] === 'virtio-serial') add(3);
  }
  for (const n of devices?.all('interface') ?? []) if (isVirtioModel(n.child('model')?.attrs['type'])) add(1);
  for (const b of devices?.all('memballoon') ?? []) if (isVirtioModel(b.attrs['model'])) add(5);
  for (const r of devices?.all('rng') ?? []) if (isVirtioModel(r.attrs['model'])) add(4);
  for (const v of devices?.all('video') ?? []) if (v.child('model')?.attrs['type'] === 'virtio') add(16);
  for (const i of devices?.all('input') ?? []) if (i.attrs['bus'] === 'virtio') add(18);
  for (const f of devices?.all('filesystem') ?? []) add(f.child('driver')?.attrs['type'] === 'virtiofs' ? 26 : 9);
  if ((devices?.all('vsock') ?? []).length > 0) add(19);
  return counts;
}

const virtioName = (id: number): string => VIRTIO_DEVICE_NAMES[id] ?? `id ${id}`;

interface Expected {
  shape: Shape;
  virtio: Map<number, number>;
  mac: string;
  dataMagic: string;
  cdromMagic: string;
  /** the CD-ROM's bus in the converted domain */
  cdromBus: string;
}

/** Everything the serial log shows to be wrong with the boot. */
function proofProblems(proof: GuestProof, want: Expected): string[] {
  const problems: string[] = [];
  if (!proof.begun) return ["the guest's /init never ran (no 'SEVX begin' on the serial port)"];
  if (!proof.done) problems.push("the guest's /init did not reach its end (no 'SEVX done')");
  if (proof.efi !== true) problems.push('the guest did not boot via UEFI (/sys/firmware/efi is missing)');

  const seen = new Map<number, number>();
  for (const v of proof.virtio) seen.set(v.deviceId, (seen.get(v.deviceId) ?? 0) + 1);
  const ids = [...new Set([...seen.keys(), ...want.virtio.keys()])].sort((a, b) => a - b);
  for (const id of ids)
    if ((seen.get(id) ?? 0) !== (want.virtio.get(id) ?? 0))
      problems.push(`the guest sees ${seen.get(id) ?? 0} virtio ${virtioName(id)} device(s); the domain has ${want.virtio.get(id) ?? 0}`);
  for (const v of proof.virtio) {
    const what = `virtio ${virtioName(v.deviceId)} (${v.name})`;
    if (v.driver === 'none') problems.push(`${what} has no driver bound`);
    if (!hasFeature(v, VIRTIO_F_VERSION_1)) problems.push(`${what} did not negotiate VERSION_1 (bit 32 of ${v.features})`);
    if (!hasFeature(v, VIRTIO_F_ACCESS_PLATFORM)) problems.push(`${what} did not negotiate ACCESS_PLATFORM (bit 33 of ${v.features})`);
  }
  for (const line of proof.text.split('\n').filter((l) => /refuses features/.test(l))) problems.push(`the kernel says: ${line.trim()}`);

  const onScsi = (blockName: string): string | undefined => {
    const block = proof.blocks.find((b) => b.name === blockName);
    const dev = proof.virtio.find((v) => v.name === block?.on);
    if (!block) return `${blockName} is missing`;
    if (!dev || dev.deviceId !== 8 || dev.driver !== 'virtio_scsi') return `${blockName} sits on ${block.on}, not on a virtio-scsi device bound to virtio_scsi`;
    return undefined;
  };
  const esp = proof.blocks.find((b) => b.first.includes('SEVXBOOT'));
  if (!esp) problems.push('no block device shows the boot disk\'s EFI system partition (FAT label SEVXBOOT)');
  else {
    const bootDisk = esp.name.replace(/p?\d+$/, '');
    const wrong = onScsi(bootDisk);
    if (wrong) problems.push(`boot disk: ${wrong}`);
  }
  const cdrom = proof.blocks.find((b) => b.first.includes(want.cdromMagic));
  if (!cdrom) problems.push(`no block device reads the CD-ROM's first bytes (${want.cdromMagic})`);
  else if (!cdrom.name.startsWith('sr')) problems.push(`the CD-ROM's content shows on ${cdrom.name}, not on a CD-ROM (sr*)`);
  else if (want.cdromBus === 'scsi') {
    // A SATA CD-ROM may stay (AHCI is no virtio device); one on SCSI must be on virtio-scsi.
    const wrong = onScsi(cdrom.name);
    if (wrong) problems.push(`CD-ROM: ${wrong}`);
  }
  if (!proof.blocks.some((b) => b.first.includes(want.dataMagic))) problems.push(`no block device reads the data disk's first bytes (${want.dataMagic})`);

  const entry = currentBootEntry(proof);
  if (!entry) problems.push('the guest printed no BootCurrent');
  else {
    const path = devicePathText(entry.path);
    const started = firmwareBootLines(proof).filter((l) => l.includes(`Boot${entry.number} `));
    if (started.length === 0) problems.push(`OVMF's log has no "BdsDxe: starting Boot${entry.number}" line for BootCurrent`);
    if (want.shape.network) {
      const mac = entry.path.find(isMacNode);
      const macHex = mac?.data.slice(0, 6).map((b) => b.toString(16).padStart(2, '0')).join(':');
      if (macHex !== want.mac) problems.push(`BootCurrent is Boot${entry.number} "${entry.description}" (${path}), not the network boot of NIC ${want.mac}`);
      if (!proof.text.includes('>>Start PXE over IPv4')) problems.push('OVMF never printed ">>Start PXE over IPv4"');
      // iPXE (the NIC's option ROM) announces itself; with the ROM off only OVMF's own driver can boot.
      if (/iPXE/.test(proof.text)) problems.push("iPXE ran: the NIC's option ROM is not off");
      if (proof.cmdline.includes('BOOT_IMAGE=')) problems.push(`the kernel came through GRUB (cmdline ${proof.cmdline}), not from the unified image over TFTP`);
    } else {
      if (!entry.path.some(isScsiNode)) problems.push(`BootCurrent is Boot${entry.number} "${entry.description}" (${path}), not a SCSI disk`);
      if (!proof.cmdline.includes('BOOT_IMAGE=/vmlinuz')) problems.push(`the kernel did not come through the disk's GRUB (cmdline ${proof.cmdline})`);
    }
  }
  if (want.shape.expander) {
    const { node, virtio } = want.shape.expander;
    for (const v of proof.virtio.filter((d) => virtio.includes(d.deviceId)))
      if (v.numaNode !== node) problems.push(`virtio ${virtioName(v.deviceId)} (${v.name}) is on NUMA node ${v.numaNode}, not on the expander bus's node ${node}`);
  }
  if (want.shape.secureBoot && efiNumber(proof.efivars.get('SecureBoot')) !== 1)
    problems.push(`Secure Boot is not on (SecureBoot = ${String(efiNumber(proof.efivars.get('SecureBoot')))})`);
  return problems;
}

/**
 * The copy of a converted domain that this host can run: no launchSecurity (no
 * SEV here) and no tag (an installed hook would refuse a tagged domain without
 * it); no memtune or <locked/> (libvirt must raise RLIMIT_MEMLOCK for them,
 * which needs CAP_SYS_RESOURCE); TCG with a CPU model TCG has. A reboot or
 * crash ends the run, so a guest that panics fails at once.
 */
function tcgCopy(converted: string, name: string, tftp?: { dir: string; file: string }): string {
  const r = run('xmlstarlet', [
    'ed',
    '-N', 'sev=urn:sev-xform:domain:1',
    '-u', '/domain/name', '-v', name,
    '-d', '/domain/uuid',
    '-d', '/domain/launchSecurity',
    '-d', '/domain/metadata/sev:sev',
    '-d', '/domain/memtune',
    '-d', '/domain/memoryBacking/locked',
    '-u', '/domain/@type', '-v', 'qemu',
    '-u', "/domain/cpu[@mode='host-passthrough' or @mode='host-model']/@mode", '-v', 'maximum',
    '-d', '/domain/on_reboot',
    '-d', '/domain/on_crash',
    '-s', '/domain', '-t', 'elem', '-n', 'on_reboot', '-v', 'destroy',
    '-s', '/domain', '-t', 'elem', '-n', 'on_crash', '-v', 'destroy',
  ], { input: converted });
  if (r.code !== 0) throw new Error(`xmlstarlet ed (TCG copy): ${r.stderr.trim()}`);
  let xml = r.stdout;
  if (tftp) {
    // libvirt offers no TFTP server for user networking: QEMU's own slirp TFTP server is
    // added as a second netdev, and the converted NIC (iommu, ROM off, as
    // converted) is pointed at it. Only this non-SEV copy gets it.
    const netdev = `user,id=sevxtftp,tftp=${tftp.dir},bootfile=${tftp.file}`;
    const extra =
      `  <qemu:commandline>\n    <qemu:arg value='-netdev'/>\n    <qemu:arg value='${netdev}'/>\n  </qemu:commandline>\n` +
      `  <qemu:override>\n    <qemu:device alias='net0'>\n      <qemu:frontend>\n` +
      `        <qemu:property name='netdev' type='string' value='sevxtftp'/>\n      </qemu:frontend>\n    </qemu:device>\n  </qemu:override>\n`;
    xml = xml.replace(/<domain\b/, `<domain xmlns:qemu="${QEMU_NS}"`).replace(/<\/domain>\s*$/, `${extra}</domain>\n`);
  }
  return xml;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts the domain and waits until it is shut off; returns the seconds it ran. `log` is a host path. */
async function bootAndWait(name: string, log: string, stack: Stack): Promise<number> {
  const t0 = performance.now();
  virshOk(['start', name], undefined, stack);
  for (;;) {
    await sleep(POLL_MS);
    const state = virsh(['domstate', name], undefined, stack).stdout.trim();
    if (state === 'shut off') return (performance.now() - t0) / 1000;
    if (performance.now() - t0 > DEADLINE_MS) {
      virsh(['destroy', name], undefined, stack);
      const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-25).join('\n') : '(no serial log)';
      throw new Error(`[${stack.name}] ${name} is still ${state} after ${DEADLINE_MS / 1000} s; serial log ends:\n${tail}`);
    }
  }
}

const stacks = integrationStacks('boot.test.ts');
// The guest image is built once, on the host, for every stack.
let image: string | undefined;
const works: string[] = [];

for (const stack of stacks) {
  // The domains' files live where the stack's libvirtd and QEMU see them (the chroot's
  // /tmp for debian13): `work` is the host path, paths in domain XML are stack.innerPath().
  const work = mkdtempSync(join(stack.hostPath('/tmp'), 'sevx-test-boot-'));
  works.push(work);
  const inner = (hostPath: string): string => stack.innerPath(hostPath);
  const domcapsFile = join(work, 'domcaps.xml');
  let domcaps: El | undefined;

  test(stack.label('prerequisites: the guest image, virt-install, libvirtd with SEV, dist/sev-xform'), () => {
    requirePrerequisites(['sfdisk', 'mkfs.fat', 'mcopy', 'objcopy'], stack);
    const caps = virshOk(['domcapabilities', '--machine', 'q35'], undefined, stack);
    writeFileSync(domcapsFile, caps);
    domcaps = parseXml(caps);
    assert.is(domcaps.child('features')?.child('sev')?.attrs['supported'], 'yes', 'domcapabilities must report <sev supported="yes">');
    if (image === undefined) {
      const t0 = performance.now();
      const built = run('bash', [BUILDER, IMAGE_CACHE]);
      assert.is(built.code, 0, `${BUILDER}: ${built.stderr}`);
      image = built.stdout.trim();
      const versions = readFileSync(join(image, 'versions.txt'), 'utf8').split('\n')[0];
      console.log(`boot: guest image ${image} (${versions}) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  });

  for (const shape of SHAPES) {
    test(stack.label(`boot ${shape.id}`), async () => {
      assert.ok(domcaps && image, 'the prerequisites test did not finish');
      const name = `sevx-test-boot-${shape.id}`;
      const dir = mkdtempSync(join(work, `${shape.id}-`));
      const files: Files = { boot: join(dir, 'boot.img'), data: join(dir, 'data.img'), cdrom: join(dir, 'cdrom.iso') };
      const innerFiles: Files = { boot: inner(files.boot), data: inner(files.data), cdrom: inner(files.cdrom) };
      const token = randomBytes(6).toString('hex');
      const dataMagic = `SEVX-DATA-${token}`;
      const cdromMagic = `SEVX-CDROM-${token}`;
      copyFileSync(join(image, 'disk.img'), files.boot);
      // Sizes: a whole number of 512-byte sectors for the disk, of 2048-byte blocks for the CD-ROM.
      writeFileSync(files.data, Buffer.concat([Buffer.from(dataMagic), Buffer.alloc(1024 * 1024 - dataMagic.length)]));
      writeFileSync(files.cdrom, Buffer.concat([Buffer.from(cdromMagic), Buffer.alloc(2 * 1024 * 1024 - cdromMagic.length)]));
      // QEMU's TFTP server serves this folder, so the unified image goes where the stack's QEMU sees it.
      if (shape.network) copyFileSync(join(image, 'uki.efi'), join(dir, 'uki.efi'));
      const log = join(dir, 'serial.log');

      // virt-install creates a storage pool for the folder of an existing disk file, even with --print-xml.
      const poolNames = (): string[] => virshOk(['pool-list', '--all', '--name'], undefined, stack).split('\n').map((s) => s.trim()).filter(Boolean);
      const poolsBefore = new Set(poolNames());
      try {
        // The stack's own virt-install, generating for its daemon (as virt-install.test.ts does).
        const shapeArgs = shape.args(innerFiles);
        const gen = stack.virtInstall([
          '--print-xml', '--import', '--name', name, '--memory', String(MEMORY_MIB), '--vcpus', String(shape.vcpus ?? 1),
          '--osinfo', 'linux2022', ...(shapeArgs.includes('--network') ? [] : ['--network', 'user']),
          '--serial', `file,path=${inner(log)}`, '--graphics', 'none', '--noautoconsole',
          // No TPM: virt-install adds one to UEFI guests, and it has nothing to do with this test.
          '--tpm', 'none',
          ...shapeArgs,
        ]);
        assert.is(gen.code, 0, `virt-install: ${gen.stderr}`);

        const input = join(dir, 'in.xml');
        writeFileSync(input, addTag(gen.stdout));
        const conv = runBin(['--domcaps', domcapsFile, '--firmware-dirs', stack.firmwareDirs.join(','), input]);
        assert.is(conv.code, 0, `dist/sev-xform refused the ${shape.id} domain: ${conv.stderr.trim()}`);
        const converted = conv.stdout;
        writeFileSync(join(dir, 'out.xml'), converted);

        // libvirt takes the SEV guest itself, and renders it as one.
        const sevDomain = parseXml(converted);
        const sev = sevExpectation(sevDomain, domcaps);
        assert.ok(sev, 'the converted domain has launchSecurity');
        const rendered = defineAndRender(join(dir, 'out.xml'), name, sevDomain, stack);
        const renderIssues = renderProblems(sevDomain, rendered.defined, rendered.cmd, sev);
        assert.ok(renderIssues.length === 0, `${shape.id} as an SEV guest:\n  ${renderIssues.join('\n  ')}\n${describeCommand(rendered.cmd)}`);
        const sevFirmware = rendered.cmd.blockdevs.find((b) => b['node-name'] === 'libvirt-pflash0-storage')?.['filename'];
        const mac = sevDomain.child('devices')?.child('interface')?.child('mac')?.attrs['address'] ?? '';

        const copy = join(dir, 'tcg.xml');
        writeFileSync(copy, tcgCopy(converted, name, shape.network ? { dir: inner(dir), file: 'uki.efi' } : undefined));
        undefineQuietly(name, stack);
        virshOk(['define', copy], undefined, stack);
        try {
          const defined = parseXml(virshOk(['dumpxml', '--inactive', name], undefined, stack));
          rmSync(log, { force: true });
          const seconds = await bootAndWait(name, log, stack);
          const live = existsSync(log) ? readFileSync(log, 'utf8') : '';
          const proof = parseSerialLog(live);
          const cdromBus = defined.child('devices')?.all('disk').find((d) => d.attrs['device'] === 'cdrom')?.child('target')?.attrs['bus'] ?? '';
          const problems = proofProblems(proof, { shape, virtio: expectedVirtio(defined), mac, dataMagic, cdromMagic, cdromBus });
          const entry = currentBootEntry(proof);
          const secure = efiNumber(proof.efivars.get('SecureBoot'));
          console.log(
            `boot[${stack.name}]: ${shape.id}: booted in ${seconds.toFixed(1)} s (SEV firmware ${String(sevFirmware ?? 'auto')}; ` +
              `Secure Boot ${secure === 1 ? 'on' : 'off'}; Boot${entry?.number ?? '?'} "${entry?.description ?? ''}" ${entry ? devicePathText(entry.path) : ''}; ` +
              `virtio: ${proof.virtio.map((v) => `${virtioName(v.deviceId)}=${v.driver}${shape.expander ? `@node${v.numaNode}` : ''}`).join(' ')})`,
          );
          const sevxLines = proof.text.split('\n').filter((l) => /SEVX |BdsDxe|PXE|refuses|Kernel panic/.test(l)).join('\n');
          assert.ok(problems.length === 0, `${shape.id}:\n  ${problems.join('\n  ')}\nserial log (${log}):\n${sevxLines}`);
        } finally {
          undefineQuietly(name, stack);
        }
      } finally {
        for (const pool of poolNames()) {
          if (poolsBefore.has(pool)) continue;
          virsh(['pool-destroy', pool], undefined, stack);
          virsh(['pool-undefine', pool], undefined, stack);
        }
      }
    });
  }
}

// SEVX_KEEP_BOOT=1 keeps the domains' files and serial logs for a look afterwards.
test.after(() => {
  for (const work of works) {
    if (process.env['SEVX_KEEP_BOOT'] === '1') console.log(`boot: files kept in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
});
if (stacks.length > 0) test.run();
