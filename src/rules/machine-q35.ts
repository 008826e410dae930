import { removeElement } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import { describeDevice, removeDevice } from '../domain/devices.js';
import type { Rule, RuleContext } from './types.js';

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

/** A PCI bus or controller index as libvirt writes it (decimal or 0x hex); undefined when absent or malformed. */
function busNumber(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^0x[0-9a-f]+$/i.test(v)) return parseInt(v, 16);
  return /^[0-9]+$/.test(v) ? Number(v) : undefined;
}

/**
 * The devices that sit, through any bridges, on the PCI bus of controller
 * `index`, read from their i440fx PCI addresses (before those are dropped).
 */
function devicesBehind(devices: XmlElement, index: number): XmlElement[] {
  const parentOf = new Map<number, number>();
  for (const c of devices.elements('controller')) {
    const own = busNumber(c.attr('index'));
    const address = c.first('address');
    const parent = address?.attr('type') === 'pci' ? busNumber(address.attr('bus')) : undefined;
    if (c.attr('type') === 'pci' && own !== undefined && parent !== undefined && own !== parent) parentOf.set(own, parent);
  }
  const under = (bus: number): boolean => {
    for (let b: number | undefined = bus, hops = 0; b !== undefined && hops < 256; b = parentOf.get(b), hops++) if (b === index) return true;
    return false;
  };
  return devices.elements().filter((d) => {
    if (d.name === 'controller' && d.attr('type') === 'pci') return false;
    const address = d.first('address');
    const bus = address?.attr('type') === 'pci' ? busNumber(address.attr('bus')) : undefined;
    return bus !== undefined && under(bus);
  });
}

/**
 * An i440fx pci-expander-bus (pxb) exists to give its devices a guest NUMA node.
 * On q35 the same thing is a pcie-expander-bus (pxb-pcie), which accepts the
 * same <target> <node> and busNr (1-254), so the bus and its node are kept; the
 * devices behind it cannot keep their place (its automatic pci-bridge does not
 * exist on PCIe and their i440fx addresses are dropped), which is said.
 */
function convertExpanderBus(ctx: RuleContext, devices: XmlElement, ctrl: XmlElement): void {
  const index = ctrl.attr('index') ?? '?';
  const target = ctrl.first('target');
  const nodeEl = target?.first('node');
  const node = nodeEl?.text().trim();
  if (node !== undefined) {
    const cells = (ctx.domain.first('cpu')?.first('numa')?.elements('cell') ?? []).map((c) => c.attr('id')?.trim());
    if (!cells.includes(node))
      refuse(nodeEl!.path(), `pci-expander-bus index ${index} is on NUMA node ${node}, which the guest does not have (<cpu><numa> has no cell id='${node}'): a pcie-expander-bus on q35 cannot be placed there`);
  }
  const behind = devicesBehind(devices, busNumber(ctrl.attr('index')) ?? -1);
  ctrl.setAttr('model', 'pcie-expander-bus');
  const modelName = ctrl.first('model');
  if (modelName?.attr('name') === 'pxb') modelName.setAttr('name', 'pxb-pcie');
  const busNr = target?.attr('busNr');
  let busNote = '';
  if (busNr !== undefined) {
    const n = busNumber(busNr);
    if (n === undefined || n < 1 || n > 254) {
      target!.removeAttr('busNr');
      busNote = `; its busNr '${busNr}' is outside 1-254, so libvirt picks one`;
    } else busNote = `, busNr ${busNr}`;
  }
  const where = node !== undefined ? `NUMA node ${node}` : 'no NUMA node';
  ctx.change(`pci-expander-bus index ${index} -> pcie-expander-bus (${where}${busNote}): pxb is i440fx's expander bus, pxb-pcie is q35's`);
  if (behind.length > 0)
    ctx.warn(
      `pcie-expander-bus index ${index} keeps ${where}, but the devices behind it (${behind.map(describeDevice).join(', ')}) lose their i440fx addresses and libvirt places them on the root complex; to keep them on ${where}, plug each into a pcie-root-port on bus ${index}`,
    );
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

    // Before the addresses go: they say which devices sit behind an expander bus.
    for (const ctrl of devices.elements('controller'))
      if (ctrl.attr('type') === 'pci' && ctrl.attr('model') === 'pci-expander-bus') convertExpanderBus(ctx, devices, ctrl);

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
      } else if (t === 'pci' && model !== 'pcie-expander-bus') {
        removeDevice(ctrl, `<controller type='pci' model='${model ?? ''}'>`, ctx.warn);
        ctx.change(`removed <controller type='pci' model='${model ?? ''}'>: an i440fx PCI topology; libvirt adds q35 root ports`);
      } else if (t === 'usb' && (model === undefined || PIIX_USB.has(model))) {
        ctrl.setAttr('model', 'qemu-xhci');
        ctx.change(`USB controller ${model ?? '(default piix3-uhci)'} -> qemu-xhci: the PIIX controllers belong to i440fx`);
      } else if (t === 'ide') {
        removeDevice(ctrl, "<controller type='ide'>", ctx.warn);
        ctx.change('removed the IDE controller: q35 has none');
      }
    }
  },
};
