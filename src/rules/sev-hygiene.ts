import { createElement, insertOrdered, removeElement } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import { DEVICE_CHILD_ORDER } from '../domain/libvirt-order.js';
import { VIRTIO_MODELS, bootOrder, describeDevice, devicesOf } from '../domain/devices.js';
import type { Rule, RuleContext } from './types.js';

const OVMF_BOOTS_IT =
  "OVMF's own virtio-net driver, which maps its DMA through the IOMMU protocol as SEV needs, network-boots it instead of the NIC's iPXE ROM, which is not SEV-aware";

function isVirtioNic(nic: XmlElement): boolean {
  return VIRTIO_MODELS.has(nic.first('model')?.attr('type') ?? '');
}

/**
 * The interfaces the firmware may network-boot, each with whether it is tried
 * first: one with its own <boot order> (first when no device has a lower order),
 * and the first interface when <os><boot dev='network'/> asks (libvirt gives that
 * boot index to the first <interface>; first when 'network' is the first entry).
 */
function networkBootNics(ctx: RuleContext, devices: XmlElement): Map<XmlElement, boolean> {
  const nics = devices.elements('interface');
  const orders = devices.elements().map(bootOrder).filter((o): o is number => o !== undefined);
  const lowest = Math.min(...orders);
  const booted = new Map<XmlElement, boolean>();
  for (const nic of nics) {
    const order = bootOrder(nic);
    if (order !== undefined) booted.set(nic, order === lowest);
  }
  const entries = ctx.domain.elements('os').flatMap((os) => os.elements('boot'));
  const network = entries.findIndex((b) => b.attr('dev') === 'network');
  if (network >= 0 && nics[0]) booted.set(nics[0], network === 0);
  if (network >= 0 && !nics[0]) ctx.warn("<os><boot dev='network'/> has no <interface> to boot from");
  return booted;
}

/**
 * A non-virtio NIC can only network-boot through its iPXE option ROM, whose DMA
 * into encrypted memory cannot work, and OVMF has no driver of its own for it.
 * When the NIC is the first boot device the guest could never boot as configured:
 * refused, so the operator does not find out on the console. When it is only a
 * fallback after a disk the guest boots; the dead fallback is warned about.
 */
function nonVirtioBoot(ctx: RuleContext, nic: XmlElement, first: boolean): void {
  const model = nic.first('model')?.attr('type') ?? "libvirt's default (rtl8139 or e1000)";
  const why = `only its iPXE ROM could network-boot ${describeDevice(nic)} (model ${model}), and iPXE cannot DMA into encrypted memory; make it <model type='virtio'/> (OVMF's own virtio-net driver then boots it)`;
  if (first) refuse(nic.first('boot') ? nic.first('boot')!.path() : nic.path(), `network boot first cannot work in an SEV guest: ${why}, or boot from a disk`);
  ctx.warn(`the network-boot fallback cannot work in an SEV guest (the guest still boots from its disk): ${why}`);
}

export const sevHygiene: Rule = {
  name: 'sev-hygiene',
  description: 'virtio NIC option ROMs off (OVMF itself network-boots virtio NICs), drops vmcoreinfo, refuses PCI/mdev passthrough and network boot from non-virtio NICs',
  apply(ctx) {
    const { domain } = ctx;
    const devices = devicesOf(domain);
    for (const hostdev of devices.elements('hostdev')) {
      const type = hostdev.attr('type');
      if (type === 'pci' || type === 'mdev')
        refuse(hostdev.path(), `${type} passthrough cannot work with SEV: the device cannot DMA into encrypted guest memory`);
    }
    const booted = networkBootNics(ctx, devices);
    for (const nic of devices.elements('interface')) {
      if (nic.attr('type') === 'hostdev')
        refuse(nic.path(), "type='hostdev' is PCI passthrough, which cannot work with SEV");
      if (!isVirtioNic(nic)) {
        const first = booted.get(nic);
        if (first !== undefined) nonVirtioBoot(ctx, nic, first);
        continue;
      }
      const why = booted.has(nic) ? OVMF_BOOTS_IT : 'iPXE is not SEV-aware';
      const rom = nic.first('rom');
      if (!rom) {
        insertOrdered(nic, createElement('rom', [['enabled', 'no']]), DEVICE_CHILD_ORDER['interface']!);
        ctx.change(`${describeDevice(nic)}: added <rom enabled='no'/>: ${why}`);
      } else {
        // libvirt refuses ROM tuning on a disabled ROM.
        let changed = rom.setAttr('enabled', 'no');
        changed = rom.removeAttr('bar') || changed;
        changed = rom.removeAttr('file') || changed;
        if (changed) ctx.change(`${describeDevice(nic)}: <rom enabled='no'/>: ${why}`);
      }
    }
    const vmcoreinfo = domain.first('features')?.first('vmcoreinfo');
    if (vmcoreinfo && vmcoreinfo.attr('state') !== 'off') {
      removeElement(vmcoreinfo);
      ctx.change('removed <features><vmcoreinfo/>: it needs DMA that the encryption forbids');
    }
  },
};
