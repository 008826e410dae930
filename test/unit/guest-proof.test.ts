// The boot test reads its verdict from the guest's serial log
// (test/support/guest-proof.ts); these lines are from a real boot of the
// test guest under QEMU (q35, OVMF, virtio-scsi disk, iommu_platform=on), with
// OVMF's and GRUB's terminal control sequences left in.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_VERSION_1,
  currentBootEntry,
  devicePathText,
  efiNumber,
  firmwareBootLines,
  hasFeature,
  isMacNode,
  isScsiNode,
  parseLoadOption,
  parseSerialLog,
} from '../support/guest-proof.js';

const ESC = '\x1b';
const LOG = [
  `${ESC}[2J${ESC}[01;01H${ESC}[=3h${ESC}[2J${ESC}[01;01HBdsDxe: loading Boot0001 "UEFI QEMU QEMU HARDDISK " from PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x0,0x0)\r`,
  'BdsDxe: starting Boot0001 "UEFI QEMU QEMU HARDDISK " from PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x0,0x0)\r',
  `\r${ESC}[0m${ESC}[37m${ESC}[40mSEVX begin kernel=6.1.0-57-amd64 cmdline=BOOT_IMAGE=/vmlinuz console=ttyS0,115200 loglevel=3 panic=5\r`,
  'SEVX virtio virtio0 device=0x0008 driver=virtio_scsi features=0110000000000000000000000000110011000000100000000000000000000000 numa=-1\r',
  'SEVX virtio virtio2 device=0x0005 driver=none features=0100000000000000000000000000010010000000100000000000000000000000 numa=1\r',
  'SEVX block sda on=virtio0 path=/sys/devices/pci0000:00/0000:00:03.0/virtio0/host0/target0:0:0/0:0:0:0/block/sda first=\r',
  'SEVX block sda1 on=virtio0 path=/sys/devices/pci0000:00/0000:00:03.0/virtio0/host0/target0:0:0/0:0:0:0/block/sda/sda1 first=mkfs.fat SEVXBOOT   FAT16 \r',
  'SEVX block sr0 on=virtio0 path=/sys/devices/pci0000:00/0000:00:03.0/virtio0/host0/target0:0:1/0:0:1:0/block/sr0 first=SEVX-CDROM-5678 \r',
  'SEVX efi yes\r',
  'SEVX efivar BootCurrent 06 00 00 00 01 00\r',
  'SEVX efivar SecureBoot 06 00 00 00 00\r',
  'SEVX efivar Boot0001 07 00 00 00 01 00 00 00 1e 00 55 00 45 00 46 00 49 00 20 00 51 00 45 00 4d 00 55 00 20 00 51 00 45 00 4d 00 55 00 20 00 48 00 41 00 52 00 44 00 44 00 49 00 53 00 4b 00 20 00 00 00 02 01 0c 00 d0 41 03 0a 00 00 00 00 01 01 06 00 00 03 03 02 08 00 00 00 00 00 7f ff 04 00 4e ac 08 81 11 9f 59 4d 85 0e e2 1a 52 2c 59 b2\r',
  '[    2.701153] reboot: a kernel line SEVX dmesg [    2.701153] virtio_balloon virtio2: virtio: device refuses features: 3\r',
  'SEVX done\r',
].join('\n');

test('proof lines: virtio devices, features counted from the left', () => {
  const p = parseSerialLog(LOG);
  assert.ok(p.begun && p.done);
  assert.is(p.cmdline, 'BOOT_IMAGE=/vmlinuz console=ttyS0,115200 loglevel=3 panic=5');
  assert.equal(p.virtio.map((v) => [v.name, v.deviceId, v.driver, v.numaNode]), [['virtio0', 8, 'virtio_scsi', '-1'], ['virtio2', 5, 'none', '1']]);
  const [scsi, balloon] = p.virtio;
  assert.ok(hasFeature(scsi!, VIRTIO_F_VERSION_1) && hasFeature(scsi!, VIRTIO_F_ACCESS_PLATFORM));
  assert.ok(hasFeature(balloon!, VIRTIO_F_VERSION_1));
  assert.not.ok(hasFeature(balloon!, VIRTIO_F_ACCESS_PLATFORM), 'the balloon that refused features lacks bit 33');
  assert.equal(p.dmesg, ['[    2.701153] virtio_balloon virtio2: virtio: device refuses features: 3'], 'a proof line behind a kernel message still counts');
});

test('proof lines: block devices keep first= text with spaces', () => {
  const p = parseSerialLog(LOG);
  assert.equal(p.blocks.map((b) => [b.name, b.on, b.first]), [
    ['sda', 'virtio0', ''],
    ['sda1', 'virtio0', 'mkfs.fat SEVXBOOT   FAT16'],
    ['sr0', 'virtio0', 'SEVX-CDROM-5678'],
  ]);
});

test('efivarfs: attribute bytes dropped, BootCurrent names a SCSI boot entry', () => {
  const p = parseSerialLog(LOG);
  assert.is(p.efi, true);
  assert.is(efiNumber(p.efivars.get('BootCurrent')), 1);
  assert.is(efiNumber(p.efivars.get('SecureBoot')), 0);
  const entry = currentBootEntry(p)!;
  assert.is(entry.number, '0001');
  assert.is(entry.description, 'UEFI QEMU QEMU HARDDISK');
  assert.is(devicePathText(entry.path), 'PciRoot/Pci(0x3,0x0)/Scsi(0x0,0x0)');
  assert.ok(entry.path.some(isScsiNode));
  assert.equal(firmwareBootLines(p), ['BdsDxe: starting Boot0001 "UEFI QEMU QEMU HARDDISK " from PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x0,0x0)']);
});

test('load option: a PXE entry carries the NIC MAC', () => {
  // "PXE" description, PciRoot/Pci(0x1,0x0)/MAC(525400123456,0x1)/IPv4(...): built by hand after UEFI 2.10, 10.3.5.11.
  const desc = [...'PXE'].flatMap((c) => [c.charCodeAt(0), 0]).concat([0, 0]);
  const path = [
    0x02, 0x01, 0x0c, 0x00, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0,
    0x01, 0x01, 0x06, 0x00, 0x00, 0x01,
    0x03, 0x0b, 0x25, 0x00, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, ...new Array<number>(26).fill(0), 0x01,
    0x03, 0x0c, 0x1b, 0x00, ...new Array<number>(23).fill(0),
    0x7f, 0xff, 0x04, 0x00,
  ];
  const bytes = [0x01, 0, 0, 0, path.length, 0, ...desc, ...path];
  const entry = parseLoadOption('0003', bytes);
  assert.is(entry.description, 'PXE');
  assert.is(devicePathText(entry.path), 'PciRoot/Pci(0x1,0x0)/MAC(525400123456)/IPv4');
  assert.ok(entry.path.some(isMacNode));
});

test.run();
