// The host's SEV facts as libvirt reports them in `virsh domcapabilities`.
// Read-only, so fast-xml-parser's object tree is all we need here.

import { XMLParser, XMLValidator } from 'fast-xml-parser';
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
  arch?: string;
  machine?: string;
  sev: SevCaps;
}

function num(v: unknown, what: string, source: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const s = String(v).trim();
  if (!/^[0-9]+$/.test(s)) fail({ kind: 'host', message: `${source}: <sev><${what}> is '${s}', not a number` });
  return Number(s);
}

/** Parses domcapabilities XML; `source` names it in messages (a file, or the virsh command). */
export function parseDomainCaps(xml: string, source: string): DomainCaps {
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) fail({ kind: 'host', message: `${source}: DOCTYPE and entity declarations are refused` });
  const ok = XMLValidator.validate(xml);
  if (ok !== true) fail({ kind: 'host', message: `${source}: not well-formed XML: ${ok.err.msg} (line ${ok.err.line})` });
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@',
    parseTagValue: false,
    parseAttributeValue: false,
    processEntities: false,
  });
  const doc = parser.parse(xml) as Record<string, unknown>;
  const caps = doc['domainCapabilities'] as Record<string, unknown> | undefined;
  if (!caps || typeof caps !== 'object') fail({ kind: 'host', message: `${source}: root element is not <domainCapabilities>` });
  const features = (caps['features'] ?? {}) as Record<string, unknown>;
  const sev = features['sev'] as Record<string, unknown> | string | undefined;
  if (sev === undefined) {
    fail({ kind: 'host', message: `${source}: no <features><sev> element: libvirt is older than 4.5 or not the QEMU driver` });
  }
  const s = (typeof sev === 'object' ? sev : {}) as Record<string, unknown>;
  return {
    arch: typeof caps['arch'] === 'string' ? caps['arch'] : undefined,
    machine: typeof caps['machine'] === 'string' ? caps['machine'] : undefined,
    sev: {
      supported: s['@supported'] === 'yes',
      cbitpos: num(s['cbitpos'], 'cbitpos', source),
      reducedPhysBits: num(s['reducedPhysBits'], 'reducedPhysBits', source),
      maxGuests: num(s['maxGuests'], 'maxGuests', source),
      maxESGuests: num(s['maxESGuests'], 'maxESGuests', source),
    },
  };
}
