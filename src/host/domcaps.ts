// The host's SEV facts as libvirt reports them in `virsh domcapabilities`.
// Read with the project's own parser: fast-xml-parser's object tree cost about
// 9 ms on each filter and hook run for a 300-line document (measured).

import { parseXml, type XmlElement } from '../xml/xmlapi.js';
import { fail } from '../failure.js';

export interface SevCaps {
  supported: boolean;
  cbitpos?: number;
  reducedPhysBits?: number;
  /** SEV guests that can run at once (libvirt >= 8.0); undefined when not reported. */
  maxGuests?: number;
  /** SEV-ES guests that can run at once (libvirt >= 8.0); undefined when not reported. */
  maxESGuests?: number;
}

export interface DomainCaps {
  /** The QEMU binary these capabilities were probed from (`<path>`). */
  emulator?: string;
  arch?: string;
  machine?: string;
  sev: SevCaps;
  /**
   * The `type` values of <launchSecurity> this libvirt and QEMU can launch
   * (`<launchSecurity supported='yes'><enum name='sectype'>`), e.g. sev and
   * sev-snp; undefined when domcapabilities have no <launchSecurity> element,
   * which libvirt added in 10.5, the release that also added SEV-SNP.
   */
  launchSecurityTypes?: string[];
}

function num(v: unknown, what: string, source: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const s = String(v).trim();
  if (!/^[0-9]+$/.test(s)) fail({ kind: 'host', message: `${source}: <sev><${what}> is '${s}', not a number` });
  return Number(s);
}

/** Parses domcapabilities XML; `source` names it in messages (a file, or the virsh command). */
export function parseDomainCaps(xml: string, source: string): DomainCaps {
  let caps: XmlElement;
  try {
    caps = parseXml(xml).root;
  } catch (e: unknown) {
    fail({ kind: 'host', message: `${source}: not well-formed XML: ${e instanceof Error ? e.message : String(e)}` });
  }
  if (caps.name !== 'domainCapabilities') fail({ kind: 'host', message: `${source}: root element is not <domainCapabilities>` });
  const sev = caps.first('features')?.first('sev');
  if (!sev) fail({ kind: 'host', message: `${source}: no <features><sev> element: libvirt is older than 4.5 or not the QEMU driver` });
  const child = (name: string): string | undefined => sev.first(name)?.text();
  // libvirt prints it last inside <features>; accept it beside <features> too.
  const ls = caps.first('features')?.first('launchSecurity') ?? caps.first('launchSecurity');
  const sectype = ls?.elements('enum').find((e) => e.attr('name') === 'sectype');
  const launchSecurityTypes = !ls
    ? undefined
    : ls.attr('supported') !== 'yes'
      ? []
      : (sectype?.elements('value') ?? []).map((v) => v.text().trim());
  return {
    launchSecurityTypes,
    emulator: caps.first('path')?.text().trim() || undefined,
    arch: caps.first('arch')?.text().trim(),
    machine: caps.first('machine')?.text().trim(),
    sev: {
      supported: sev.attr('supported') === 'yes',
      cbitpos: num(child('cbitpos'), 'cbitpos', source),
      reducedPhysBits: num(child('reducedPhysBits'), 'reducedPhysBits', source),
      maxGuests: num(child('maxGuests'), 'maxGuests', source),
      maxESGuests: num(child('maxESGuests'), 'maxESGuests', source),
    },
  };
}
