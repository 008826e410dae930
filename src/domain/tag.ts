// The operator's opt-in: `<sev:sev xmlns:sev="urn:sev-xform:domain:1"/>` in
// <metadata>, as `virsh metadata --uri urn:sev-xform:domain:1 --key sev` writes it.

import type { XmlElement } from '../xml/xmlapi.js';

export const TAG_NAMESPACE = 'urn:sev-xform:domain:1';

/** The tag element, whatever prefix it was written with. */
export function findTag(domain: XmlElement): XmlElement | undefined {
  const metadata = domain.first('metadata');
  if (!metadata) return undefined;
  for (const el of metadata.elements()) {
    const q = el.qname();
    if (q.local === 'sev' && q.uri === TAG_NAMESPACE) return el;
  }
  return undefined;
}

/** True for a domain that asks for SEV or already has launchSecurity of any kind. */
export function isSevDomain(domain: XmlElement): boolean {
  return findTag(domain) !== undefined || domain.first('launchSecurity') !== undefined;
}
