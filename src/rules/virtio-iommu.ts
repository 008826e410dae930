import { createElement, insertAfter, insertOrdered, removeElement } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { DEVICES_ORDER, DEVICE_CHILD_ORDER } from '../domain/libvirt-order.js';
import { VIRTIO_MODELS, describeDevice, devicesOf, diskBus, isVirtioScsi, userAlias } from '../domain/devices.js';
import type { Rule, RuleContext } from './types.js';

/**
 * The virtio devices of a q35 domain, each of which gets <driver iommu='on'/>.
 * The list follows where libvirt's schema (src/conf/schemas/domaincommon.rng)
 * references `virtioOptions`: the disk driver, the controller driver, the
 * filesystem driver (9p and virtiofs alike), the interface driver, the video
 * driver, and the <driver> of memballoon, vsock, input and rng; crypto (libvirt
 * >= 9.1) likewise. Nothing else may carry iommu: libvirt rejects it with "iommu
 * driver option is only supported for virtio devices" (an IDE CD-ROM, an e1000 NIC,
 * a USB controller), so those are left alone.
 */
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
    case 'crypto':
      return VIRTIO_MODELS.has(dev.attr('model') ?? '');
    case 'vsock':
      // vhost-vsock is virtio whatever its optional model says.
      return true;
    case 'video':
      return dev.first('model')?.attr('type') === 'virtio';
    case 'input':
      return dev.attr('bus') === 'virtio';
    case 'filesystem':
      return isVirtioFilesystem(dev);
    default:
      return false;
  }
}

/**
 * QEMU shares a host folder as virtio-9p (driver type 'path' or 'handle', or no
 * driver type at all) or virtio-fs (type 'virtiofs'); both are virtio devices, and
 * under memory encryption Linux refuses a virtio device without ACCESS_PLATFORM.
 * The other driver types (loop, nbd, ploop) and filesystem types belong to LXC and
 * other hypervisors, which QEMU refuses anyway.
 */
function isVirtioFilesystem(fs: XmlElement): boolean {
  const type = fs.attr('type');
  if (type !== undefined && type !== 'mount') return false;
  const driverType = fs.first('driver')?.attr('type');
  return driverType === undefined || driverType === 'path' || driverType === 'handle' || driverType === 'virtiofs';
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

const BALLOON_WHY =
  "an SEV guest's balloon cannot work: Linux's virtio_balloon driver clears ACCESS_PLATFORM, so with iommu QEMU refuses its features and the guest gets no driver, and SEV memory is pinned, so ballooning could not return it anyway";

/**
 * The balloon becomes model 'none'. Without any <memballoon> libvirt adds a
 * virtio one of its own, so 'none' is written explicitly. libvirt builds no
 * device for 'none': its stats, driver, address and alias describe nothing, and
 * are dropped with the autodeflate and freePageReporting switches.
 */
function disableBalloon(ctx: RuleContext, devices: XmlElement): void {
  const balloons = devices.elements('memballoon');
  if (balloons.length === 0) {
    insertOrdered(devices, createElement('memballoon', [['model', 'none']]), DEVICES_ORDER);
    ctx.change(`added <memballoon model='none'/>: otherwise libvirt adds a virtio balloon; ${BALLOON_WHY}`);
    return;
  }
  for (const balloon of balloons) {
    const model = balloon.attr('model');
    const extraAttrs = balloon.attrs.some((a) => a.name !== 'model');
    const children = balloon.elements();
    if (model === 'none' && !extraAttrs && children.length === 0) continue;
    const alias = userAlias(balloon);
    if (alias !== undefined)
      ctx.warn(`<memballoon> with user alias '${alias}' was removed (it is model 'none' now): tools that address the balloon by that alias must stop`);
    for (const a of [...balloon.attrs]) if (a.name !== 'model') balloon.removeAttr(a.name);
    for (const child of children) removeElement(child);
    balloon.setAttr('model', 'none');
    ctx.change(`<memballoon model='${model ?? ''}'> -> <memballoon model='none'/>: ${BALLOON_WHY}`);
  }
}

/**
 * Where each device kind keeps a virtio model that can be transitional. Not
 * <input>: virtio-input is virtio 1.0 only, and libvirt refuses either model on it.
 */
function modelHolder(dev: XmlElement): { el: XmlElement; attr: string } | undefined {
  switch (dev.name) {
    case 'interface':
      return dev.first('model') ? { el: dev.first('model')!, attr: 'type' } : undefined;
    case 'disk':
    case 'controller':
    case 'memballoon':
    case 'rng':
    case 'vsock':
    case 'filesystem':
    case 'hostdev':
    case 'crypto':
      return { el: dev, attr: 'model' };
    default:
      return undefined;
  }
}

/**
 * A transitional virtio device also offers the legacy (pre-1.0) interface, which
 * cannot negotiate the IOMMU platform: QEMU refuses it with iommu ("VIRTIO_F_IOMMU_PLATFORM
 * was supported by neither legacy nor transitional device"), so the guest never starts.
 */
function nonTransitional(ctx: RuleContext, devices: XmlElement): void {
  for (const dev of devices.elements()) {
    const holder = modelHolder(dev);
    if (!holder || holder.el.attr(holder.attr) !== 'virtio-transitional') continue;
    holder.el.setAttr(holder.attr, 'virtio-non-transitional');
    ctx.change(
      `${describeDevice(dev)}: virtio-transitional -> virtio-non-transitional: QEMU refuses a transitional virtio device with iommu_platform (its legacy interface cannot use the IOMMU)`,
    );
  }
}

/**
 * Device kinds whose QEMU device may offer the legacy interface, with where their
 * model lives; the others (virtio-input, -gpu, -fs, vsock, crypto) are virtio 1.0
 * only in QEMU, wherever they sit.
 */
function legacyCapableModel(dev: XmlElement): { el: XmlElement; attr: string } | undefined {
  switch (dev.name) {
    case 'disk':
    case 'interface':
    case 'controller':
    case 'rng':
      return modelHolder(dev);
    case 'filesystem':
      return dev.first('driver')?.attr('type') === 'virtiofs' ? undefined : modelHolder(dev);
    default:
      return undefined;
  }
}

/** PCI controllers behind which QEMU turns a virtio device's legacy interface off by itself. */
const PCIE_PORTS = new Set(['pcie-root-port', 'pcie-switch-downstream-port']);

/**
 * Whether a device's explicit PCI address puts it on a bus that is not a PCIe
 * port: q35's root bus pcie.0 (bus 0x00, an integrated endpoint), an expander's
 * root bus or a conventional PCI bridge. QEMU's disable-legacy=auto disables the
 * legacy interface only on a PCIe bus that is not a root bus, so there the
 * device stays transitional. Without an address libvirt puts virtio devices on
 * a pcie-root-port.
 */
function onNonPortBus(devices: XmlElement, dev: XmlElement): string | undefined {
  const address = dev.first('address');
  if (address?.attr('type') !== 'pci') return undefined;
  const busText = address.attr('bus') ?? '0';
  const bus = /^0x[0-9a-f]+$/i.test(busText) ? parseInt(busText.slice(2), 16) : /^[0-9]+$/.test(busText) ? Number(busText) : undefined;
  if (bus === undefined) return undefined;
  if (bus === 0) return 'pcie.0 (PCI bus 0x00, the root bus)';
  const ctrl = devices.elements('controller').find((c) => c.attr('type') === 'pci' && c.attr('index') === String(bus));
  const model = ctrl?.attr('model');
  if (model === undefined || PCIE_PORTS.has(model)) return undefined;
  return `PCI bus ${busText} (a ${model}, not a PCIe port)`;
}

/**
 * A legacy-capable virtio device addressed outside a PCIe port stays transitional
 * in QEMU, which then refuses iommu_platform. Forcing the non-transitional model
 * (libvirt 9.0 accepts it at a user-given address on pcie.0 and renders
 * virtio-*-pci-non-transitional, legacy off) keeps the device where it is, and so
 * the guest's device names; dropping the address would move it onto a new port.
 */
function nonTransitionalOffPort(ctx: RuleContext, devices: XmlElement): void {
  for (const dev of devices.elements()) {
    if (!isVirtioDevice(dev)) continue;
    const holder = legacyCapableModel(dev);
    if (!holder) continue;
    const model = holder.el.attr(holder.attr);
    if (model === 'virtio-non-transitional') continue;
    const where = onNonPortBus(devices, dev);
    if (where === undefined) continue;
    holder.el.setAttr(holder.attr, 'virtio-non-transitional');
    ctx.change(
      `${describeDevice(dev)}: ${model === undefined ? 'model' : `${model} ->`} virtio-non-transitional: its address is on ${where}, where QEMU keeps a virtio device transitional (legacy is off only behind a PCIe port) and refuses iommu_platform on it; the model keeps the address, so the guest's device names stay`,
    );
  }
}

/**
 * Shares that convert but may not start. virtio-fs is a vhost-user device: its
 * features, VIRTIO_F_ACCESS_PLATFORM among them, come from the virtiofsd
 * backend, and QEMU refuses iommu_platform on a device whose backend does not
 * offer it ("iommu_platform=true is not supported by the device", seen with
 * QEMU 7.2's C virtiofsd on Debian 12, and with virtiofsd 1.13.2 under QEMU 10.0
 * on Debian 13). The 9p 'handle' driver is gone since
 * QEMU 6.0, so such a share never starts there, SEV or not; the filter keeps it
 * (older QEMU still has it) and says so.
 */
function warnFilesystems(ctx: RuleContext, devices: XmlElement): void {
  for (const fs of devices.elements('filesystem')) {
    if (!isVirtioFilesystem(fs)) continue;
    const driverType = fs.first('driver')?.attr('type');
    if (driverType === 'virtiofs')
      ctx.warn(
        `${describeDevice(fs)}: virtiofs in an SEV guest needs a virtiofsd that offers VIRTIO_F_ACCESS_PLATFORM: QEMU refuses the device with "iommu_platform=true is not supported by the device" otherwise, as measured with QEMU 7.2's C virtiofsd (Debian 12) and with virtiofsd 1.13.2 under QEMU 10.0 (Debian 13); use a virtiofsd that offers it, or share files another way (9p, NFS)`,
      );
    else if (driverType === 'handle')
      ctx.warn(`${describeDevice(fs)}: the 9p driver type 'handle' was removed in QEMU 6.0: no QEMU since can start this share, SEV or not; use <driver type='path'/>`);
  }
}

export const virtioIommu: Rule = {
  name: 'virtio-iommu',
  description: "sets <driver iommu='on'/> on every virtio device, makes transitional ones non-transitional, and turns the balloon off",
  apply(ctx) {
    const devices = devicesOf(ctx.domain);
    ensureVirtioSerial(ctx, devices);
    disableBalloon(ctx, devices);
    nonTransitional(ctx, devices);
    nonTransitionalOffPort(ctx, devices);
    warnFilesystems(ctx, devices);
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
