import { createElement, insertOrdered, removeElement } from '../xml/edit.js';
import { refuse } from '../failure.js';
import { DEVICE_CHILD_ORDER } from '../domain/libvirt-order.js';
import { VIRTIO_MODELS, bootOrder, describeDevice, devicesOf } from '../domain/devices.js';
import type { Rule } from './types.js';

export const sevHygiene: Rule = {
  name: 'sev-hygiene',
  description: 'disables virtio NIC option ROMs, drops vmcoreinfo, refuses network boot and PCI/mdev passthrough',
  apply(ctx) {
    const { domain } = ctx;
    const devices = devicesOf(domain);
    for (const hostdev of devices.elements('hostdev')) {
      const type = hostdev.attr('type');
      if (type === 'pci' || type === 'mdev')
        refuse(hostdev.path(), `${type} passthrough cannot work with SEV: the device cannot DMA into encrypted guest memory`);
    }
    for (const os of domain.elements('os'))
      for (const boot of os.elements('boot'))
        if (boot.attr('dev') === 'network') refuse(boot.path(), "boot dev='network': network boot cannot work in an SEV guest (its option ROM is not SEV-aware)");
    for (const nic of devices.elements('interface')) {
      if (nic.attr('type') === 'hostdev')
        refuse(nic.path(), "type='hostdev' is PCI passthrough, which cannot work with SEV");
      if (bootOrder(nic) !== undefined)
        refuse(nic.first('boot')!.path(), 'network boot cannot work in an SEV guest (iPXE is not SEV-aware); boot from a disk');
      if (!VIRTIO_MODELS.has(nic.first('model')?.attr('type') ?? '')) continue;
      const rom = nic.first('rom');
      if (!rom) {
        insertOrdered(nic, createElement('rom', [['enabled', 'no']]), DEVICE_CHILD_ORDER['interface']!);
        ctx.change(`${describeDevice(nic)}: added <rom enabled='no'/>: iPXE is not SEV-aware`);
      } else {
        // libvirt refuses ROM tuning on a disabled ROM.
        let changed = rom.setAttr('enabled', 'no');
        changed = rom.removeAttr('bar') || changed;
        changed = rom.removeAttr('file') || changed;
        if (changed) ctx.change(`${describeDevice(nic)}: <rom enabled='no'/>: iPXE is not SEV-aware`);
      }
    }
    const vmcoreinfo = domain.first('features')?.first('vmcoreinfo');
    if (vmcoreinfo && vmcoreinfo.attr('state') !== 'off') {
      removeElement(vmcoreinfo);
      ctx.change('removed <features><vmcoreinfo/>: it needs DMA that the encryption forbids');
    }
  },
};
