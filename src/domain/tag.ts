// The operator's opt-in: `<sev:sev xmlns:sev="urn:sev-xform:domain:1"/>` in
// <metadata>, as `virsh metadata --uri urn:sev-xform:domain:1 --key sev` writes it.
//
// Any element in this namespace anywhere in the domain marks it as SEV, and
// anything but the one tag with known attributes is refused, naming it: a
// near-miss such as `<sev:sev-es/>` or `polciy=` that were silently ignored
// let a domain the operator meant to encrypt boot unencrypted.

import { refuse } from '../failure.js';
import type { XmlElement } from '../xml/xmlapi.js';

export const TAG_NAMESPACE = 'urn:sev-xform:domain:1';

/** The tag's local name. */
export const TAG_NAME = 'sev';

/** Attributes the tag may carry (besides namespace declarations); add new ones here. */
export const TAG_ATTRIBUTES: readonly string[] = ['policy', 'model', 'snp-policy'];

/** launchSecurity types that are AMD SEV: the domain is an SEV domain. Others (tdx, s390-pv) are not ours. */
export function isSevLaunchType(type: string | undefined): boolean {
  // A missing type is not a domain libvirt defines; treated as SEV so that it is refused, not waved through.
  return type === undefined || type === 'sev' || type.startsWith('sev-');
}

/** Every element in the sev-xform namespace, in document order (usually just the tag). */
export function sevXformElements(domain: XmlElement): XmlElement[] {
  const found: XmlElement[] = [];
  // Prefixes bound to the namespace in scope ('' for the default namespace); almost always none.
  const walk = (el: XmlElement, bound: ReadonlySet<string>): void => {
    let scope = bound;
    for (const a of el.attrs) {
      if (a.name !== 'xmlns' && !a.name.startsWith('xmlns:')) continue;
      const prefix = a.name === 'xmlns' ? '' : a.name.slice(6);
      if (a.value === TAG_NAMESPACE ? !scope.has(prefix) : scope.has(prefix)) {
        const next = new Set(scope);
        if (a.value === TAG_NAMESPACE) next.add(prefix);
        else next.delete(prefix);
        scope = next;
      }
    }
    if (scope.size > 0) {
      const colon = el.name.indexOf(':');
      if (scope.has(colon < 0 ? '' : el.name.slice(0, colon))) found.push(el);
    }
    for (const c of el.children) if (c.kind === 'element') walk(c, scope);
  };
  walk(domain, new Set());
  return found;
}

function localName(el: XmlElement): string {
  return el.name.slice(el.name.indexOf(':') + 1);
}

/**
 * The tag, or undefined when the domain has none. Refuses, naming it, any other
 * element in the namespace, a tag outside <metadata> or a second one, and an
 * attribute the tag does not know.
 */
export function findTag(domain: XmlElement): XmlElement | undefined {
  const elements = sevXformElements(domain);
  let tag: XmlElement | undefined;
  for (const el of elements) {
    if (localName(el) !== TAG_NAME)
      refuse(el.path(), `<${el.name}> in the sev-xform namespace ${TAG_NAMESPACE} is not the tag <${TAG_NAME}>; write <sev:${TAG_NAME}/> (with model='sev-es' for SEV-ES, model='sev-snp' for SEV-SNP) or remove it`);
    if (el.parent !== domain.first('metadata') || el.parent === null)
      refuse(el.path(), `the sev-xform tag must be a direct child of <metadata>`);
    if (tag) refuse(el.path(), `a second sev-xform tag; keep one`);
    for (const a of el.attrs) {
      if (a.name === 'xmlns' || a.name.startsWith('xmlns:') || TAG_ATTRIBUTES.includes(a.name)) continue;
      refuse(el.path(), `unknown attribute '${a.name}' on the sev-xform tag (known: ${TAG_ATTRIBUTES.join(', ')})`);
    }
    tag = el;
  }
  return tag;
}

/** True when the domain has the tag, any other element in its namespace, or launchSecurity of an SEV type. Never throws. */
export function isSevDomain(domain: XmlElement): boolean {
  const ls = domain.first('launchSecurity');
  if (ls && isSevLaunchType(ls.attr('type'))) return true;
  return sevXformElements(domain).length > 0;
}
