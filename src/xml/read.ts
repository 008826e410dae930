// Reading untrusted bytes into a document: limits first, then fast-xml-parser's
// validator (line and column in its messages), then the lossless tree.

import { XMLValidator } from 'fast-xml-parser';
import { XmlInputError } from './errors.js';
import { parseXml, type XmlDocument } from './xmlapi.js';

/** Largest input accepted; a domain with thousands of devices is well under 1 MiB. */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024;

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

/** Parses checked text; DOCTYPE and entity declarations are refused before anything expands them. */
export function readXml(text: string, what: string): XmlDocument {
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) throw new XmlInputError(`${what}: DOCTYPE and entity declarations are refused`);
  const trimmed = text.trimStart();
  if (!trimmed.startsWith('<')) throw new XmlInputError(`${what} is not XML`);
  const verdict = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (verdict !== true) {
    const e = verdict.err;
    throw new XmlInputError(`${what}: ${e.msg.replace(/\.$/, '')} (line ${e.line}, column ${e.col})`);
  }
  try {
    return parseXml(text);
  } catch (e: unknown) {
    if (e instanceof XmlInputError) throw new XmlInputError(`${what}: ${e.message}`);
    throw e;
  }
}
