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
 * The interface the firmware network-boots, if any: one with its own <boot
 * order>, else the first interface when <os><boot dev='network'/> asks (libvirt
 * gives that boot index to the first <interface>).
 */
function networkBootNics(ctx: RuleContext, devices: XmlElement): Set<XmlElement> {
  const nics = devices.elements('interface');
  const booted = new Set(nics.filter((n) => bootOrder(n) !== undefined));
  const osBoot = ctx.domain.elements('os').flatMap((os) => os.elements('boot')).find((b) => b.attr('dev') === 'network');
  if (osBoot && nics[0]) booted.add(nics[0]);
  if (osBoot && !nics[0]) ctx.warn("<os><boot dev='network'/> has no <interface> to boot from");
  return booted;
}

/**
 * A non-virtio NIC can only network-boot through its iPXE option ROM, whose DMA
 * into encrypted memory cannot work, and OVMF has no driver of its own for it:
 * the guest would hang or skip it at every boot. Refused, because an operator who
 * asked for network boot from that NIC would otherwise find out on the console.
 */
function refuseNonVirtioBoot(nic: XmlElement): never {
  const model = nic.first('model')?.attr('type') ?? "libvirt's default (rtl8139 or e1000)";
  const where = nic.first('boot') ? nic.first('boot')!.path() : nic.path();
  refuse(
    where,
    `network boot from ${describeDevice(nic)} (model ${model}) cannot work in an SEV guest: only its iPXE ROM could boot it, and iPXE cannot DMA into encrypted memory; make it <model type='virtio'/> (OVMF's own virtio-net driver then boots it) or boot from a disk`,
  );
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
        if (booted.has(nic)) refuseNonVirtioBoot(nic);
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
