// Reading untrusted bytes into a document: limits first, then the lossless
// tree, whose parser checks well-formedness with bounded depth and node count,
// then fast-xml-parser's validator as a second opinion. The validator runs
// second, and only on inputs of a realistic size, because on hostile input it
// is the weak part: a 60 MiB attribute or 60 million lines cost it seconds and
// gigabytes, and on 100,000 levels of nesting its message lists every open tag.

import { XMLValidator } from 'fast-xml-parser';
import { XmlInputError } from './errors.js';
import { parseXml, type XmlDocument } from './xmlapi.js';

/** Largest input accepted; a domain with thousands of devices is well under 1 MiB. */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024;

/** Inputs up to this size also pass fast-xml-parser's validator (a 1,000-device domain is about 400 KiB). */
export const VALIDATOR_MAX_CHARS = 4 * 1024 * 1024;

/** Decodes and checks input bytes; `what` names the input in messages. */
export function decodeInput(bytes: Uint8Array, what: string): string {
  if (bytes.length === 0) throw new XmlInputError(`${what} is empty`);
  if (bytes.length > MAX_INPUT_BYTES) throw new XmlInputError(`${what} is larger than the 64 MiB limit`);
  if ((bytes[0] === 0xfe && bytes[1] === 0xff) || (bytes[0] === 0xff && bytes[1] === 0xfe))
    throw new XmlInputError(`${what} is UTF-16; libvirt XML is UTF-8`);
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf)
    throw new XmlInputError(`${what} starts with a byte-order mark; libvirt writes UTF-8 without one`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new XmlInputError(`${what} is not valid UTF-8`);
  }
  if (text.includes('\0')) throw new XmlInputError(`${what} contains NUL bytes: not XML`);
  return text;
}

/** Parses checked text; the parser refuses DOCTYPE and entity declarations where it meets them, before anything could expand them. */
export function readXml(text: string, what: string, opts: { secondOpinion?: boolean } = {}): XmlDocument {
  const trimmed = text.trimStart();
  if (!trimmed.startsWith('<')) throw new XmlInputError(`${what} is not XML`);
  let doc: XmlDocument;
  try {
    doc = parseXml(text);
  } catch (e: unknown) {
    if (e instanceof XmlInputError) throw new XmlInputError(`${what}: ${e.message}`);
    throw e;
  }
  // fast-xml-parser's names stop at the Basic Multilingual Plane, while XML 1.0 allows names up to
  // #xEFFFF; our parser checks those, so text with supplementary characters goes without the second opinion.
  if (opts.secondOpinion !== false && text.length <= VALIDATOR_MAX_CHARS && !/[\uD800-\uDBFF]/.test(text)) {
    const verdict = XMLValidator.validate(text);
    if (verdict !== true) {
      const msg = verdict.err.msg.replace(/\.$/, '');
      throw new XmlInputError(`${what}: ${msg.length > 200 ? `${msg.slice(0, 200)}...` : msg} (line ${verdict.err.line}, column ${verdict.err.col})`);
    }
  }
  return doc;
}
