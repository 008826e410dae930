// Is a domain a correct SEV guest? It is when converting it would change
// nothing: the rules are the single definition of "correct", so `check` and
// the hook can never disagree with the filter.

import { FailureError, renderFailure } from './failure.js';
import { isSevDomain } from './domain/tag.js';
import { readDomain, transformDocument } from './transform.js';
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
  const doc = readDomain(input, what, trusted);
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
