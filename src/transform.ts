// Runs the preset over one domain document.

import { readXml } from './xml/read.js';
import { XmlInputError } from './xml/errors.js';
import type { XmlDocument } from './xml/xmlapi.js';
import { fail } from './failure.js';
import { findTag } from './domain/tag.js';
import { refuseQemuPassthrough } from './domain/qemu-passthrough.js';
import { refuseUnprobedEmulator } from './domain/emulator.js';
import { PRESET } from './rules/index.js';
import type { HostFacts, Rule, TransformOptions } from './rules/types.js';

export interface Change {
  rule: string;
  message: string;
}

export interface TransformResult {
  /** The converted document, or the input itself when nothing applied. */
  output: string;
  /** False when the domain was left alone because it carries no tag. */
  converted: boolean;
  changes: Change[];
  warnings: string[];
}

/**
 * Parses a domain document; any problem becomes a bad-input failure.
 * `trusted` skips fast-xml-parser's second opinion for XML that libvirt itself
 * wrote (the hook's stdin): our strict parser still checks it, and the hook's
 * start-up time is paid on every domain start of the host.
 */
export function readDomain(text: string, what = 'input', trusted = false): XmlDocument {
  let doc: XmlDocument;
  try {
    doc = readXml(text, what, { secondOpinion: !trusted });
  } catch (e: unknown) {
    if (e instanceof XmlInputError) fail({ kind: 'bad-input', message: e.message });
    throw e;
  }
  if (doc.root.name !== 'domain') fail({ kind: 'bad-input', message: `${what}: root element is <${doc.root.name}>, not <domain>` });
  return doc;
}

export interface TransformRun {
  all?: boolean;
  rules?: readonly Rule[];
  /** Names the input in messages. */
  what?: string;
}

export function transformDomain(input: string, options: TransformOptions, host: HostFacts, opts: TransformRun = {}): TransformResult {
  return transformDocument(readDomain(input, opts.what), input, options, host, opts);
}

/** Runs the preset over a parsed document (which it changes); `input` is its source text. */
export function transformDocument(
  doc: XmlDocument,
  input: string,
  options: TransformOptions,
  host: HostFacts,
  opts: TransformRun = {},
): TransformResult {
  const domain = doc.root;
  // Refuses near-miss tags (another element in the namespace, an unknown attribute) rather than ignoring them.
  const tag = findTag(domain);
  if (!tag && !opts.all) return { output: input, converted: false, changes: [], warnings: [] };
  refuseQemuPassthrough(domain);
  const changes: Change[] = [];
  const warnings: string[] = [];
  for (const rule of opts.rules ?? PRESET) {
    rule.apply({
      domain,
      tag,
      options,
      host,
      change: (message) => changes.push({ rule: rule.name, message }),
      warn: (message) => warnings.push(message),
    });
  }
  // After the rules, so that a domain they refuse (another arch, say) is refused for that first.
  refuseUnprobedEmulator(domain, host);
  return { output: changes.length ? doc.toString() : input, converted: true, changes, warnings };
}
