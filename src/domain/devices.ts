// Device-level vocabulary shared by the rules: which bus a disk is on, which
// devices are virtio, and how a disk moves onto a virtio-scsi controller.

import { createElement, ensureChild, insertAfter, insertOrdered, removeElement } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import { DEVICES_ORDER, DEVICE_CHILD_ORDER, DOMAIN_ORDER } from './libvirt-order.js';

export const VIRTIO_MODELS = new Set(['virtio', 'virtio-transitional', 'virtio-non-transitional']);

/**
 * A user alias (`<alias name='ua-...'/>`), which management tools set to address a
 * device by; undefined for none or for one libvirt generated (it regenerates those).
 */
export function userAlias(el: XmlElement): string | undefined {
  const name = el.first('alias')?.attr('name');
  return name !== undefined && name.startsWith('ua-') ? name : undefined;
}

/**
 * Removes a device; when it carries a user alias, a warning names it, since
 * management tools address devices by it and would now find nothing.
 */
export function removeDevice(el: XmlElement, what: string, warn: (message: string) => void): void {
  const alias = userAlias(el);
  removeElement(el);
  if (alias !== undefined) warn(`${what} with user alias '${alias}' was removed: tools that address it by that alias must be updated`);
}

export function devicesOf(domain: XmlElement): XmlElement {
  return ensureChild(domain, 'devices', DOMAIN_ORDER);
}

/** The bus of a disk: its target's bus, else what libvirt infers from the name. */
export function diskBus(disk: XmlElement): string | undefined {
  const target = disk.first('target');
  const bus = target?.attr('bus');
  if (bus) return bus;
  const dev = target?.attr('dev') ?? '';
  if (dev.startsWith('hd')) return 'ide';
  if (dev.startsWith('sd')) return 'scsi';
  if (dev.startsWith('vd')) return 'virtio';
  if (dev.startsWith('xvd')) return 'xen';
  if (dev.startsWith('fd')) return 'fdc';
  return undefined;
}

export function diskDevice(disk: XmlElement): string {
  return disk.attr('device') ?? 'disk';
}

export function bootOrder(dev: XmlElement): number | undefined {
  const order = dev.first('boot')?.attr('order');
  return order !== undefined && /^[0-9]+$/.test(order) ? Number(order) : undefined;
}

/** The disk the guest boots from: lowest `<boot order>` among disks, else the first disk. */
export function bootDisk(devices: XmlElement): XmlElement | undefined {
  const disks = devices.elements('disk').filter((d) => diskDevice(d) === 'disk');
  let best: XmlElement | undefined;
  let bestOrder = Infinity;
  for (const d of disks) {
    const o = bootOrder(d);
    if (o !== undefined && o < bestOrder) {
      best = d;
      bestOrder = o;
    }
  }
  return best ?? disks[0];
}

/** Name of the n-th SCSI disk: sda..sdz, sdaa.. as libvirt counts them. */
function scsiName(n: number): string {
  let s = '';
  let k = n + 1;
  while (k > 0) {
    k -= 1;
    s = String.fromCharCode(97 + (k % 26)) + s;
    k = Math.floor(k / 26);
  }
  return 'sd' + s;
}

function nextFreeScsiName(devices: XmlElement): string {
  const used = new Set(devices.elements('disk').map((d) => d.first('target')?.attr('dev')));
  for (let n = 0; ; n++) {
    const name = scsiName(n);
    if (!used.has(name)) return name;
  }
}

const VIRTIO_SCSI_MODELS = new Set(['virtio-scsi', 'virtio-transitional', 'virtio-non-transitional']);

export function isVirtioScsi(ctrl: XmlElement): boolean {
  return ctrl.attr('type') === 'scsi' && VIRTIO_SCSI_MODELS.has(ctrl.attr('model') ?? '');
}

function controllerIndex(ctrl: XmlElement): number {
  const i = ctrl.attr('index');
  return i !== undefined && /^[0-9]+$/.test(i) ? Number(i) : 0;
}

/**
 * The virtio-scsi controller disks move to: the existing one with the lowest
 * index, else a new one at the lowest free SCSI index.
 */
export function virtioScsiController(devices: XmlElement, added: (what: string) => void): XmlElement {
  const scsi = devices.elements('controller').filter((c) => c.attr('type') === 'scsi');
  const existing = scsi.filter(isVirtioScsi).sort((a, b) => controllerIndex(a) - controllerIndex(b))[0];
  if (existing) return existing;
  const used = new Set(scsi.map(controllerIndex));
  let index = 0;
  while (used.has(index)) index++;
  const ctrl = createElement('controller', [
    ['type', 'scsi'],
    ['index', String(index)],
    ['model', 'virtio-scsi'],
  ]);
  const lastScsi = scsi[scsi.length - 1];
  if (lastScsi) insertAfter(devices, lastScsi, ctrl);
  else insertOrdered(devices, ctrl, DEVICES_ORDER);
  added(`added <controller type='scsi' index='${index}' model='virtio-scsi'>`);
  return ctrl;
}

/** Driver attributes that only a virtio-blk or IDE disk accepts, not a SCSI one. */
const NOT_FOR_SCSI_DISKS = ['queues', 'queue_size', 'iothread', 'event_idx', 'ioeventfd', 'iommu', 'ats', 'packed', 'page_per_vq'];

/**
 * Moves a disk to bus scsi on the virtio-scsi controller: next free sdX name,
 * stale address dropped (or a drive address on that controller when it is not
 * index 0, where libvirt would put an address-less disk), virtio-blk-only
 * options dropped. Boot order, source and everything else stay.
 */
export function moveDiskToVirtioScsi(devices: XmlElement, disk: XmlElement, added: (what: string) => void): string {
  const target = disk.first('target');
  if (!target) refuse(disk.path(), 'disk has no <target>');
  const from = `${target.attr('dev') ?? '?'} (${diskBus(disk) ?? 'unknown bus'})`;
  const ctrl = virtioScsiController(devices, added);
  const index = controllerIndex(ctrl);
  const dev = nextFreeScsiName(devices);
  target.setAttr('dev', dev);
  target.setAttr('bus', 'scsi');
  disk.removeAttr('model');
  const driver = disk.first('driver');
  if (driver) {
    for (const a of NOT_FOR_SCSI_DISKS) driver.removeAttr(a);
    if (driver.attrs.length === 0 && driver.elements().length === 0) removeElement(driver);
  }
  const address = disk.first('address');
  if (address) removeElement(address);
  if (index !== 0) {
    const units = new Set(
      devices
        .elements('disk')
        .map((d) => d.first('address'))
        .filter((a) => a?.attr('type') === 'drive' && a.attr('controller') === String(index))
        .map((a) => a!.attr('unit')),
    );
    let unit = 0;
    while (units.has(String(unit))) unit++;
    insertOrdered(
      disk,
      createElement('address', [
        ['type', 'drive'],
        ['controller', String(index)],
        ['bus', '0'],
        ['target', '0'],
        ['unit', String(unit)],
      ]),
      DEVICE_CHILD_ORDER['disk']!,
    );
  }
  return `${from} -> ${dev} on virtio-scsi controller ${index}`;
}

const BOOT_DEVICE: Record<string, string> = { cdrom: 'cdrom', fd: 'floppy' };

/** What `<os><boot dev=X>` boots: libvirt gives 'network' to the first <interface>, the others to a disk of that kind. */
function bootTarget(devices: XmlElement, disks: readonly XmlElement[], disk: XmlElement, dev: string): XmlElement | undefined {
  if (dev === 'hd') return disk;
  if (dev === 'network') return devices.elements('interface')[0];
  return disks.find((d) => diskDevice(d) === BOOT_DEVICE[dev]);
}

function deviceLabel(dev: XmlElement): string {
  return dev.name === 'disk' ? dev.first('target')?.attr('dev') ?? '?' : describeDevice(dev);
}

/**
 * Keeps a moved boot disk the one that boots. `<os><boot dev='hd'/>` boots the
 * first disk in libvirt's own order (grouped by bus, then by name), which the
 * move can change when other disks exist; per-device boot orders pin it, and
 * since libvirt forbids mixing the two, every `<os><boot>` becomes one.
 * Returns a description of the change, or undefined when none was needed.
 */
export function pinBootDisk(domain: XmlElement, devices: XmlElement, disk: XmlElement): string | undefined {
  if (bootOrder(disk) !== undefined) return undefined;
  const disks = devices.elements('disk');
  // 'hd' counts every disk that is not removable media: device 'disk' and 'lun' alike.
  if (!disks.some((d) => d !== disk && diskDevice(d) !== 'cdrom' && diskDevice(d) !== 'floppy')) return undefined;
  if (devices.elements().some((d) => bootOrder(d) !== undefined)) return undefined;
  const os = domain.first('os');
  const entries = os?.elements('boot') ?? [];
  const sequence = entries.length > 0 ? entries.map((b) => b.attr('dev') ?? '') : ['hd'];
  let order = 1;
  const given: string[] = [];
  for (const dev of sequence) {
    const target = bootTarget(devices, disks, disk, dev);
    if (!target || bootOrder(target) !== undefined) continue;
    insertOrdered(target, createElement('boot', [['order', String(order)]]), DEVICE_CHILD_ORDER[target.name]!);
    given.push(`${deviceLabel(target)}=${order}`);
    order++;
  }
  for (const b of entries) removeElement(b);
  return `boot order ${given.join(', ')} instead of <os><boot>: after the move another disk could come first in libvirt's order`;
}

/**
 * A device as an operator recognises it in messages: `disk sda`, `interface
 * 52:54:00:12:34:56`, `controller scsi 0`, `memballoon virtio`. Cheaper than
 * a positional path, which costs a scan of the siblings per device.
 */
export function describeDevice(dev: XmlElement): string {
  switch (dev.name) {
    case 'disk':
      return `disk ${dev.first('target')?.attr('dev') ?? dev.first('source')?.attr('file') ?? '(no target)'}`;
    case 'interface':
      return `interface ${dev.first('mac')?.attr('address') ?? dev.first('model')?.attr('type') ?? dev.attr('type') ?? ''}`.trimEnd();
    case 'controller':
      return `controller ${dev.attr('type') ?? ''} ${dev.attr('index') ?? '0'}`;
    case 'video':
      return `video ${dev.first('model')?.attr('type') ?? ''}`.trimEnd();
    case 'input':
      return `input ${dev.attr('type') ?? ''} ${dev.attr('bus') ?? ''}`.trimEnd();
    case 'filesystem':
      return `filesystem ${dev.first('target')?.attr('dir') ?? ''}`.trimEnd();
    default:
      return `${dev.name} ${dev.attr('model') ?? ''}`.trimEnd();
  }
}
