import { createElement, insertAfter, insertOrdered, removeElement } from '../xml/edit.js';
import { DEVICE_CHILD_ORDER } from '../domain/libvirt-order.js';
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

/** A PCI bus number as libvirt prints it in addresses: 0x01. */
const hexBus = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;

/** Controller models that stay when an i440fx topology becomes q35's (the rest is removed). */
const KEPT_PCI_MODELS = new Set(['pci-root', 'pcie-root', 'pci-expander-bus', 'pcie-expander-bus']);

/** An expander bus to convert, with the slots (bus/slot -> their addresses) behind it. */
interface ExpanderPlan {
  ctrl: XmlElement;
  index: number;
  where: string;
  slots: XmlElement[][];
  /** The busNr it gets: its own when there is room, else one below the others'. */
  busNr?: number;
  busNote: string;
}

/**
 * An i440fx pci-expander-bus (pxb) exists to give its devices a guest NUMA node.
 * On q35 the same thing is a pcie-expander-bus (pxb-pcie), which accepts the
 * same <target> <node>, so the bus and its node are kept. pxb-pcie takes only
 * PCIe ports, so every slot that had devices behind the pxb (directly or
 * through its pci-bridge) gets a pcie-root-port on the expander, and its
 * devices move there keeping their functions: they stay on their node.
 */
function planExpanderBus(ctx: RuleContext, devices: XmlElement, ctrl: XmlElement): ExpanderPlan {
  const indexText = ctrl.attr('index') ?? '?';
  const nodeEl = ctrl.first('target')?.first('node');
  const node = nodeEl?.text().trim();
  if (node !== undefined) {
    const cells = (ctx.domain.first('cpu')?.first('numa')?.elements('cell') ?? []).map((c) => c.attr('id')?.trim());
    if (!cells.includes(node))
      refuse(nodeEl!.path(), `pci-expander-bus index ${indexText} is on NUMA node ${node}, which the guest does not have (<cpu><numa> has no cell id='${node}'): a pcie-expander-bus on q35 cannot be placed there`);
  }
  const index = busNumber(ctrl.attr('index'));
  if (index === undefined) refuse(ctrl.path(), `pci-expander-bus index '${indexText}' is not a bus number`);
  // One root port per slot the devices had: a multifunction device stays whole.
  const slots = new Map<string, XmlElement[]>();
  for (const dev of devicesBehind(devices, index)) {
    const address = dev.first('address')!;
    const key = `${address.attr('bus') ?? ''}/${address.attr('slot') ?? ''}`;
    slots.set(key, [...(slots.get(key) ?? []), address]);
  }
  return { ctrl, index, where: node !== undefined ? `NUMA node ${node}` : 'no NUMA node', slots: [...slots.values()], busNote: '' };
}

/**
 * Guest bus numbers: an expander's busNr is its own bus, its root ports take
 * the next ones, and numbers end at 255 (the root complex counts up from 0
 * below them all). Each expander keeps its busNr when its range fits below the
 * ones above it; otherwise it gets the highest that does. libvirt would not do
 * this: left to itself it gives the first expander 254 whatever sits behind it,
 * and a guest with two root ports behind busNr 254 never got past OVMF
 * (measured by the boot test's pxb shape, libvirt 9.0).
 */
function assignBusNumbers(plans: ExpanderPlan[]): void {
  const wanted = (p: ExpanderPlan): number | undefined => {
    const n = busNumber(p.ctrl.first('target')?.attr('busNr'));
    return n !== undefined && n >= 1 && n <= 254 ? n : undefined;
  };
  let top = 255;
  for (const plan of [...plans].sort((x, y) => (wanted(y) ?? -1) - (wanted(x) ?? -1))) {
    const own = wanted(plan);
    const given = plan.ctrl.first('target')?.attr('busNr');
    const need = plan.slots.length;
    if (own !== undefined && own + need <= top) plan.busNr = own;
    else {
      plan.busNr = top - need;
      if (plan.busNr < 1) refuse(plan.ctrl.path(), `pcie-expander-bus index ${plan.index}: no guest bus numbers left for it and its ${need} root port(s) (bus numbers end at 255)`);
      plan.busNote =
        given === undefined
          ? `; busNr ${plan.busNr}, leaving bus numbers for its ${need} root port(s)`
          : own === undefined
            ? `; its busNr '${given}' is outside 1-254, so busNr ${plan.busNr}`
            : `; busNr ${own} -> ${plan.busNr}: its ${need} root port(s) need bus numbers ${own + 1}-${own + need}${own + need > 255 ? ', past 255' : ', which another expander bus uses'}`;
    }
    if (plan.busNote === '') plan.busNote = `, busNr ${own}`;
    top = plan.busNr - 1;
  }
}

/**
 * Converts a planned expander bus. Adds to `placed` the root ports it creates
 * and every address it writes (theirs and the re-homed devices'): the rest of
 * the rule must neither remove those ports nor drop those addresses.
 */
function convertExpanderBus(ctx: RuleContext, devices: XmlElement, plan: ExpanderPlan, nextIndex: () => number, placed: Set<XmlElement>): void {
  const { ctrl, index, where } = plan;
  ctrl.setAttr('model', 'pcie-expander-bus');
  const modelName = ctrl.first('model');
  if (modelName?.attr('name') === 'pxb') modelName.setAttr('name', 'pxb-pcie');
  const target = ctrl.first('target');
  if (target && busNumber(target.attr('busNr')) !== plan.busNr) target.setAttr('busNr', String(plan.busNr));
  else if (!target) insertOrdered(ctrl, createElement('target', [['busNr', String(plan.busNr)]]), DEVICE_CHILD_ORDER['controller']!);
  ctx.change(`pci-expander-bus index ${index} -> pcie-expander-bus (${where}${plan.busNote}): pxb is i440fx's expander bus, pxb-pcie is q35's`);

  let anchor = ctrl;
  let slot = 0;
  for (const addresses of plan.slots) {
    const portIndex = nextIndex();
    const portAddress = createElement('address', [['type', 'pci'], ['domain', '0x0000'], ['bus', hexBus(index)], ['slot', hexBus(slot++)], ['function', '0x0']]);
    const port = createElement('controller', [['type', 'pci'], ['index', String(portIndex)], ['model', 'pcie-root-port']], [portAddress]);
    insertAfter(devices, anchor, port);
    placed.add(port).add(portAddress);
    anchor = port;
    for (const address of addresses) {
      address.setAttr('bus', hexBus(portIndex));
      address.setAttr('slot', '0x00');
      placed.add(address);
    }
    const moved = addresses.map((a) => describeDevice(a.parent!)).join(', ');
    ctx.change(`added pcie-root-port index ${portIndex} on pcie-expander-bus ${index} for ${moved}: pxb-pcie takes only PCIe ports, and the devices keep ${where}`);
  }
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
    // New root ports are numbered after the controllers that stay.
    const pciControllers = devices.elements('controller').filter((c) => c.attr('type') === 'pci');
    let lastIndex = Math.max(0, ...pciControllers.filter((c) => KEPT_PCI_MODELS.has(c.attr('model') ?? '')).map((c) => busNumber(c.attr('index')) ?? 0));
    const placed = new Set<XmlElement>();
    const plans = pciControllers.filter((c) => c.attr('model') === 'pci-expander-bus').map((c) => planExpanderBus(ctx, devices, c));
    assignBusNumbers(plans);
    for (const plan of plans) convertExpanderBus(ctx, devices, plan, () => ++lastIndex, placed);

    let dropped = 0;
    for (const address of descendants(devices, 'address')) {
      if (address.attr('type') === 'pci' && !placed.has(address)) {
        removeElement(address);
        dropped++;
      }
    }
    if (dropped) ctx.change(`dropped ${dropped} i440fx PCI address(es): libvirt assigns q35 ones`);

    for (const ctrl of devices.elements('controller')) {
      if (placed.has(ctrl)) continue;
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
