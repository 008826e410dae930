import { removeElement } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import type { Rule } from './types.js';

/** i440fx machine names: 'pc', 'pc-i440fx-X.Y', and the old aliases 'pc-0.15', 'pc-1.2'. */
function isI440fx(machine: string): boolean {
  return machine === 'pc' || machine.startsWith('pc-i440fx') || /^pc-[0-9]/.test(machine);
}

const PIIX_USB = new Set(['piix3-uhci', 'piix4-uhci']);

function descendants(el: XmlElement, name: string): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement): void => {
    for (const c of e.elements()) {
      if (c.name === name) out.push(c);
      walk(c);
    }
  };
  walk(el);
  return out;
}

export const machineQ35: Rule = {
  name: 'machine-q35',
  description: 'makes the machine q35 (x86_64 hvm only), converting what was i440fx-specific',
  apply(ctx) {
    const os = ctx.domain.first('os');
    const type = os?.first('type');
    if (!os || !type) refuse('domain/os/type', 'missing: cannot tell the guest architecture');
    const arch = type.attr('arch');
    if (arch !== undefined && arch !== 'x86_64') refuse(type.path(), `arch '${arch}': AMD SEV guests are x86_64 only`);
    const osType = type.text().trim();
    if (osType !== 'hvm') refuse(type.path(), `os type '${osType}': SEV needs a full (hvm) virtual machine`);
    const machine = type.attr('machine');
    if (machine !== undefined && machine.includes('q35')) return;
    if (machine !== undefined && !isI440fx(machine))
      refuse(type.path(), `machine '${machine}': q35 type is required for SEV to work`);

    // q35 puts virtio devices behind PCIe, so they are virtio 1.0 and can use iommu_platform.
    type.setAttr('machine', 'q35');
    ctx.change(`machine ${machine ?? '(none)'} -> q35: SEV's virtio devices need PCIe (virtio 1.0) for iommu_platform`);
    const devices = ctx.domain.first('devices');
    if (!devices) return;

    let dropped = 0;
    for (const address of descendants(devices, 'address')) {
      if (address.attr('type') === 'pci') {
        removeElement(address);
        dropped++;
      }
    }
    if (dropped) ctx.change(`dropped ${dropped} i440fx PCI address(es): libvirt assigns q35 ones`);

    for (const ctrl of devices.elements('controller')) {
      const t = ctrl.attr('type');
      const model = ctrl.attr('model');
      if (t === 'pci' && model === 'pci-root') {
        ctrl.setAttr('model', 'pcie-root');
        ctx.change('pci-root -> pcie-root: q35 has a PCIe root complex');
      } else if (t === 'pci') {
        removeElement(ctrl);
        ctx.change(`removed <controller type='pci' model='${model ?? ''}'>: an i440fx PCI topology; libvirt adds q35 root ports`);
      } else if (t === 'usb' && (model === undefined || PIIX_USB.has(model))) {
        ctrl.setAttr('model', 'qemu-xhci');
        ctx.change(`USB controller ${model ?? '(default piix3-uhci)'} -> qemu-xhci: the PIIX controllers belong to i440fx`);
      } else if (t === 'ide') {
        removeElement(ctrl);
        ctx.change('removed the IDE controller: q35 has none');
      }
    }
  },
};
