// The SEV facts sev-xform relies on (cbitpos, SEV support, the launch types)
// are those of one QEMU binary: the one domcapabilities was probed from. A
// domain naming another <emulator> (a wrapper script, another build) would run
// a binary nobody checked, which may drop the sev-guest object or the
// confidential-guest-support it is given; an SEV domain must name that binary
// or none (libvirt then uses the default, which is what domcapabilities probed).

import { refuse } from '../failure.js';
import type { HostFacts } from '../rules/types.js';
import type { XmlElement } from '../xml/xmlapi.js';

/** Refuses an SEV domain whose <devices><emulator> is not the QEMU whose capabilities were read. */
export function refuseUnprobedEmulator(domain: XmlElement, host: HostFacts): void {
  const element = domain.first('devices')?.first('emulator');
  if (!element) return;
  const emulator = element.text().trim();
  const probed = host.caps().emulator;
  if (probed !== undefined && emulator === probed) return;
  const shown = emulator.length > 200 ? `${emulator.slice(0, 200)}...` : emulator;
  refuse(
    element.path(),
    probed === undefined
      ? `'${shown}' cannot be checked: the host's domcapabilities name no <path> (emulator) to compare it with`
      : `'${shown}' is not the QEMU whose SEV support the host's domcapabilities describe (${probed}); set <emulator> to ${probed} or remove it, or convert with --domcaps from \`virsh domcapabilities --emulatorbin ${shown}\``,
  );
}
