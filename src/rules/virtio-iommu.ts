import { createElement, insertAfter, insertOrdered } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { DEVICES_ORDER, DEVICE_CHILD_ORDER } from '../domain/libvirt-order.js';
import { VIRTIO_MODELS, describeDevice, devicesOf, diskBus, isVirtioScsi } from '../domain/devices.js';
import type { Rule, RuleContext } from './types.js';

/** The virtio devices of the reference list; nothing else may carry iommu (libvirt rejects it). */
function isVirtioDevice(dev: XmlElement): boolean {
  switch (dev.name) {
    case 'disk':
      return diskBus(dev) === 'virtio';
    case 'interface':
      return dev.attr('type') !== 'hostdev' && VIRTIO_MODELS.has(dev.first('model')?.attr('type') ?? '');
    case 'controller':
      return isVirtioScsi(dev) || dev.attr('type') === 'virtio-serial';
    case 'memballoon':
    case 'rng':
    case 'vsock':
    case 'crypto':
      return VIRTIO_MODELS.has(dev.attr('model') ?? '');
    case 'video':
      return dev.first('model')?.attr('type') === 'virtio';
    case 'input':
      return dev.attr('bus') === 'virtio';
    case 'filesystem':
      return dev.first('driver')?.attr('type') === 'virtiofs';
    default:
      return false;
  }
}

/** Channels and consoles whose target is virtio ride on a virtio-serial controller. */
function usesVirtioSerial(dev: XmlElement): boolean {
  return (dev.name === 'channel' || dev.name === 'console') && dev.first('target')?.attr('type') === 'virtio';
}

function ensureVirtioSerial(ctx: RuleContext, devices: XmlElement): void {
  if (!devices.elements().some(usesVirtioSerial)) return;
  if (devices.elements('controller').some((c) => c.attr('type') === 'virtio-serial')) return;
  const ctrl = createElement('controller', [['type', 'virtio-serial'], ['index', '0']]);
  const controllers = devices.elements('controller');
  const last = controllers[controllers.length - 1];
  if (last) insertAfter(devices, last, ctrl);
  else insertOrdered(devices, ctrl, DEVICES_ORDER);
  // libvirt would add it implicitly, without the iommu driver SEV needs.
  ctx.change("added <controller type='virtio-serial' index='0'>: explicit, so it can carry iommu for the virtio channels");
}

/** Without a <memballoon>, libvirt adds a virtio one of its own, without iommu. */
function ensureMemballoon(ctx: RuleContext, devices: XmlElement): void {
  if (devices.first('memballoon')) return;
  insertOrdered(devices, createElement('memballoon', [['model', 'virtio']]), DEVICES_ORDER);
  ctx.change("added <memballoon model='virtio'>: explicit, so libvirt's default balloon carries iommu");
}

export const virtioIommu: Rule = {
  name: 'virtio-iommu',
  description: "sets <driver iommu='on'/> on every virtio device",
  apply(ctx) {
    const devices = devicesOf(ctx.domain);
    ensureVirtioSerial(ctx, devices);
    ensureMemballoon(ctx, devices);
    for (const dev of devices.elements()) {
      if (!isVirtioDevice(dev)) continue;
      const driver = dev.first('driver');
      if (driver) {
        if (driver.setAttr('iommu', 'on')) ctx.change(`${describeDevice(dev)}: iommu='on' on its <driver>: SEV guests can only DMA through the IOMMU platform`);
        continue;
      }
      const order = DEVICE_CHILD_ORDER[dev.name] ?? [];
      insertOrdered(dev, createElement('driver', [['iommu', 'on']]), order);
      ctx.change(`${describeDevice(dev)}: added <driver iommu='on'/>: SEV guests can only DMA through the IOMMU platform`);
    }
  },
};
