// libvirt's QEMU pass-through (<qemu:commandline>, <qemu:override>) reaches
// QEMU after libvirt's own arguments, so it can undo the conversion: a
// `-machine confidential-guest-support=` turns encryption off, `-object`
// replaces the sev-guest object, `-global`/`-set` turn a device's
// iommu_platform off, `-cpu`/`-bios`/`-pflash` replace the CPU model or the
// SEV firmware. An SEV domain that uses them is refused, naming the argument.

import { refuse } from '../failure.js';
import type { XmlElement } from '../xml/xmlapi.js';

export const QEMU_NAMESPACE = 'http://libvirt.org/schemas/domain/qemu/1.0';

/**
 * QEMU options that can change what the conversion set: the machine and its confidential-guest
 * support, objects, globals and properties, the CPU, the firmware, and config files that can set any of them.
 */
const FORBIDDEN_OPTIONS: ReadonlySet<string> = new Set(['machine', 'M', 'object', 'global', 'set', 'cpu', 'bios', 'pflash', 'readconfig', 'L', 'accel']);

/** The option an argument names (`-machine`, `--machine`, `-machine=q35`), or undefined when it is not an option. */
function optionOf(arg: string): string | undefined {
  const m = /^\s*--?([A-Za-z][A-Za-z0-9_-]*)(?:[=\s]|$)/.exec(arg);
  return m?.[1];
}

function inQemuNamespace(el: XmlElement, local: string): boolean {
  const q = el.qname();
  return q.uri === QEMU_NAMESPACE && q.local === local;
}

/** Refuses an SEV domain whose QEMU pass-through could undo the conversion. */
export function refuseQemuPassthrough(domain: XmlElement): void {
  for (const block of domain.elements()) {
    if (inQemuNamespace(block, 'commandline')) {
      const args = block.elements().filter((el) => inQemuNamespace(el, 'arg'));
      for (let i = 0; i < args.length; i++) {
        const value = args[i]!.attr('value') ?? '';
        const option = optionOf(value);
        const drive = option === 'drive' && /(?:^|[\s,=])if=pflash/.test(`${value} ${args[i + 1]?.attr('value') ?? ''}`);
        if (option !== undefined && (FORBIDDEN_OPTIONS.has(option) || drive)) {
          const raw = value.trim().split(/[=\s]/)[0] ?? value;
          const next = value.includes('=') || /\s/.test(value.trim()) ? '' : args[i + 1]?.attr('value');
          refuse(
            args[i]!.path(),
            `<qemu:commandline> argument '${raw}'${next !== undefined && next !== '' ? ` ('${next.length > 80 ? `${next.slice(0, 80)}...` : next}')` : ''} is passed to QEMU after libvirt's own and can undo the SEV conversion (the machine, objects, globals, CPU or firmware); remove it`,
          );
        }
      }
    } else if (inQemuNamespace(block, 'override')) {
      for (const device of block.elements()) {
        const props = device.elements().flatMap((f) => f.elements().filter((p) => inQemuNamespace(p, 'property')));
        const prop = props[0];
        refuse(
          device.path(),
          `<qemu:override> of device '${device.attr('alias') ?? '?'}'${prop ? ` (property '${prop.attr('name') ?? '?'}')` : ''} changes device properties after libvirt set them and can undo the SEV conversion (iommu_platform, the firmware); remove it`,
        );
      }
    }
  }
}
