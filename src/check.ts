// Is a domain a correct SEV guest? It is when converting it would change
// nothing: the rules are the single definition of "correct", so `check` and
// the hook can never disagree with the filter.

import { FailureError, renderFailure } from './failure.js';
import { isSevDomain } from './domain/tag.js';
import { readDomain, transformDocument } from './transform.js';
import type { XmlDocument } from './xml/xmlapi.js';
import type { HostFacts, TransformOptions } from './rules/types.js';

export interface CheckResult {
  /** True when the domain carries the tag or a launchSecurity element. */
  sev: boolean;
  /** One line per rule the domain breaks; empty for a correct SEV guest or a non-SEV domain. */
  problems: string[];
}

export const CHECK_OPTIONS: TransformOptions = { firmware: 'auto' };

export function checkDomain(
  input: string,
  host: HostFacts,
  options: TransformOptions = CHECK_OPTIONS,
  what = 'input',
  trusted = false,
): CheckResult {
  return checkDocument(readDomain(input, what, trusted), input, host, options, what);
}

/**
 * checkDomain on a document already parsed. The rules run on it, so it is
 * changed exactly where problems are reported, and untouched when there are none.
 */
export function checkDocument(
  doc: XmlDocument,
  input: string,
  host: HostFacts,
  options: TransformOptions = CHECK_OPTIONS,
  what = 'input',
): CheckResult {
  if (!isSevDomain(doc.root)) return { sev: false, problems: [] };
  try {
    const r = transformDocument(doc, input, options, host, { all: true, what });
    return { sev: true, problems: r.changes.map((c) => `${c.rule}: needs change: ${c.message}`) };
  } catch (e: unknown) {
    if (e instanceof FailureError && e.failure.kind !== 'bad-input' && e.failure.kind !== 'usage')
      return { sev: true, problems: [renderFailure(e.failure).replace(/^sev-xform: /, '')] };
    throw e;
  }
}
