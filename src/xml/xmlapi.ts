// A lossless XML tree for libvirt domain documents.
//
// Every byte of the input is kept in the tree (raw attribute text, the
// whitespace inside tags, comments, the prolog), so serialising an unchanged
// tree gives the input back byte for byte and an edit touches only the bytes it
// must. fast-xml-parser's tree cannot do that (it keeps no source text), so this
// module both checks well-formedness (with line and column) and keeps the bytes.

import { XmlInputError } from './errors.js';

export type XmlNode = XmlElement | XmlText | XmlRaw;

/** Character data; `raw` is exactly what the source had (entities not decoded). */
export class XmlText {
  readonly kind = 'text';
  parent: XmlElement | null = null;
  constructor(public raw: string) {}
  get value(): string {
    return decodeEntities(this.raw);
  }
  isWhitespace(): boolean {
    return /^[ \t\r\n]*$/.test(this.raw);
  }
}

/** Comments, CDATA sections, processing instructions and the XML declaration, kept verbatim. */
export class XmlRaw {
  readonly kind = 'raw';
  parent: XmlElement | null = null;
  constructor(public raw: string) {}
}

export interface XmlAttr {
  name: string;
  value: string;
  /** Source text of the attribute including the whitespace before it. */
  raw: string;
}

export class XmlElement {
  readonly kind = 'element';
  parent: XmlElement | null = null;
  children: XmlNode[] = [];
  attrs: XmlAttr[] = [];
  /** Whitespace between the last attribute and `>` or `/>`. */
  startTail = '';
  /** Source of the end tag (`</name>`), or null when written self-closing. */
  endRaw: string | null = null;
  /** Created by this program: formatted on insertion. */
  fresh = false;
  /** Quote used for attributes this program writes. */
  quote: "'" | '"' = "'";

  constructor(public name: string) {}

  attr(name: string): string | undefined {
    for (const a of this.attrs) if (a.name === name) return a.value;
    return undefined;
  }

  /** Sets an attribute; returns true when the document changed. */
  setAttr(name: string, value: string): boolean {
    const existing = this.attrs.find((a) => a.name === name);
    if (existing) {
      if (existing.value === value) return false;
      const lead = /^\s*/.exec(existing.raw)?.[0] ?? ' ';
      existing.value = value;
      existing.raw = `${lead}${name}=${this.quoteValue(value)}`;
      return true;
    }
    this.attrs.push({ name, value, raw: ` ${name}=${this.quoteValue(value)}` });
    return true;
  }

  removeAttr(name: string): boolean {
    const i = this.attrs.findIndex((a) => a.name === name);
    if (i < 0) return false;
    this.attrs.splice(i, 1);
    return true;
  }

  private quoteValue(value: string): string {
    return this.quote + escapeAttr(value, this.quote) + this.quote;
  }

  /** Child elements, optionally only those with the given name. */
  elements(name?: string): XmlElement[] {
    const out: XmlElement[] = [];
    for (const c of this.children) if (c.kind === 'element' && (name === undefined || c.name === name)) out.push(c);
    return out;
  }

  first(name: string): XmlElement | undefined {
    for (const c of this.children) if (c.kind === 'element' && c.name === name) return c;
    return undefined;
  }

  /** Decoded character data directly inside this element (CDATA included). */
  text(): string {
    let s = '';
    for (const c of this.children) {
      if (c.kind === 'text') s += c.value;
      else if (c.kind === 'raw' && c.raw.startsWith('<![CDATA[')) s += c.raw.slice(9, -3);
    }
    return s;
  }

  /** Replaces the content with text; returns true when the document changed. */
  setText(value: string): boolean {
    if (this.elements().length === 0 && this.text() === value) return false;
    const t = new XmlText(escapeText(value));
    t.parent = this;
    this.children = [t];
    return true;
  }

  /** Path from the root, for messages: `domain/devices/disk[2]`. */
  path(): string {
    const parts: string[] = [];
    let el: XmlElement | null = this;
    while (el) {
      const p: XmlElement | null = el.parent;
      if (p) {
        const same = p.elements(el.name);
        parts.unshift(same.length > 1 ? `${el.name}[${same.indexOf(el) + 1}]` : el.name);
      } else parts.unshift(el.name);
      el = p;
    }
    return parts.join('/');
  }

  /** Namespace URI bound to a prefix ('' for the default namespace) in scope here. */
  namespaceOf(prefix: string): string | undefined {
    const key = prefix === '' ? 'xmlns' : `xmlns:${prefix}`;
    for (let el: XmlElement | null = this; el; el = el.parent) {
      const v = el.attr(key);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  /** This element's namespace URI and local name. */
  qname(): { uri: string | undefined; local: string } {
    const i = this.name.indexOf(':');
    const prefix = i < 0 ? '' : this.name.slice(0, i);
    return { uri: this.namespaceOf(prefix), local: i < 0 ? this.name : this.name.slice(i + 1) };
  }
}

export class XmlDocument {
  constructor(
    /** Everything before the root element (declaration, comments, whitespace). */
    public prolog: XmlNode[],
    public root: XmlElement,
    public epilog: XmlNode[],
  ) {}

  toString(): string {
    let out = '';
    for (const n of this.prolog) out = writeNode(n, out);
    out = writeNode(this.root, out);
    for (const n of this.epilog) out = writeNode(n, out);
    return out;
  }
}

/** Appends `node` as XML to `out`; V8 joins these appends as a rope, cheaper than an array and join(). */
function writeNode(node: XmlNode, out: string): string {
  if (node.kind !== 'element') return out + node.raw;
  out += '<' + node.name;
  for (const a of node.attrs) out += a.raw;
  out += node.startTail;
  if (node.children.length === 0 && (node.endRaw === null || node.fresh)) return out + '/>';
  out += '>';
  for (const c of node.children) out = writeNode(c, out);
  return out + (node.endRaw ?? `</${node.name}>`);
}

// ---------------------------------------------------------------- parsing

/** Deepest nesting accepted; libvirt domains nest about 8 deep. */
export const MAX_DEPTH = 256;

/**
 * Most nodes (elements, attributes, text runs, comments) accepted: a domain
 * with a thousand disks as virt-install writes them has about 25,000. Bounds
 * the tree's memory, which the 64 MiB input limit alone would let reach gigabytes.
 */
export const MAX_NODES = 200_000;

/**
 * Most child elements of one element: libvirt domains have at most a few
 * hundred devices, and the rules' per-device work grows with the square of it
 * (10,000 devices took 3 s).
 */
export const MAX_CHILDREN = 4096;

/** A name as it appears in a message: hostile input can make one megabytes long. */
function shown(name: string): string {
  return name.length > 64 ? `${name.slice(0, 64)}...` : name;
}

/** "line L, column C" of offset `at`, counting without splitting (the input may have millions of lines). */
function position(src: string, at: number): string {
  let line = 1;
  let lineStart = 0;
  for (let nl = src.indexOf('\n'); nl >= 0 && nl < at; nl = src.indexOf('\n', nl + 1)) {
    line++;
    lineStart = nl + 1;
  }
  return `line ${line}, column ${at - lineStart + 1}`;
}

/** Character classes of ASCII name characters: 1 may start a name, 2 may only follow. */
const NAME_CHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z_:]/.test(ch)) NAME_CHAR[c] = 1;
  else if (/[-0-9.]/.test(ch)) NAME_CHAR[c] = 2;
}

/**
 * XML 1.0 (fifth edition) NameStartChar beyond ASCII, for one UTF-16 code unit; supplementary
 * characters (#x10000-#xEFFFF) are surrogate pairs and handled by nameCharAt. A metadata element
 * such as <app:größe> is legal XML, and refusing it blocked an innocent domain.
 */
function isNonAsciiNameStart(c: number): boolean {
  return (
    (c >= 0xc0 && c <= 0xd6) ||
    (c >= 0xd8 && c <= 0xf6) ||
    (c >= 0xf8 && c <= 0x2ff) ||
    (c >= 0x370 && c <= 0x37d) ||
    (c >= 0x37f && c <= 0x1fff) ||
    (c >= 0x200c && c <= 0x200d) ||
    (c >= 0x2070 && c <= 0x218f) ||
    (c >= 0x2c00 && c <= 0x2fef) ||
    (c >= 0x3001 && c <= 0xd7ff) ||
    (c >= 0xf900 && c <= 0xfdcf) ||
    (c >= 0xfdf0 && c <= 0xfffd)
  );
}

/** NameChar beyond ASCII that may not start a name. */
function isNonAsciiNameOnly(c: number): boolean {
  return c === 0xb7 || (c >= 0x300 && c <= 0x36f) || (c >= 0x203f && c <= 0x2040);
}

/**
 * Length in code units of the name character at `p` (2 for a surrogate pair), or 0 when there is
 * none; `start` asks for a NameStartChar.
 */
function nameCharAt(src: string, p: number, start: boolean): number {
  const c = src.charCodeAt(p);
  if (c < 0x80) {
    const k = NAME_CHAR[c] ?? 0;
    return k === 1 || (k === 2 && !start) ? 1 : 0;
  }
  if (isNonAsciiNameStart(c)) return 1;
  if (!start && isNonAsciiNameOnly(c)) return 1;
  // #x10000-#xEFFFF: a high surrogate up to U+DB7F followed by a low surrogate.
  if (c >= 0xd800 && c <= 0xdb7f) {
    const low = src.charCodeAt(p + 1);
    if (low >= 0xdc00 && low <= 0xdfff) return 2;
  }
  return 0;
}

/** End of the name starting at `p`, or `p` when none starts there. */
function nameEnd(src: string, p: number): number {
  const first = src.charCodeAt(p);
  let q: number;
  if (first < 0x80) {
    if (NAME_CHAR[first] !== 1) return p;
    q = p + 1;
  } else {
    const w = nameCharAt(src, p, true);
    if (w === 0) return p;
    q = p + w;
  }
  for (;;) {
    const c = src.charCodeAt(q);
    // The ASCII test first: libvirt's names are ASCII, and this loop runs for every name of every hook call.
    if (c < 0x80) {
      if ((NAME_CHAR[c] ?? 0) === 0) return q;
      q++;
      continue;
    }
    const w = nameCharAt(src, q, false);
    if (w === 0) return q;
    q += w;
  }
}

/** End of the XML whitespace (space, tab, CR, LF) starting at `p`. */
function spaceEnd(src: string, p: number): number {
  for (;;) {
    const c = src.charCodeAt(p);
    if (c !== 0x20 && c !== 0x0a && c !== 0x09 && c !== 0x0d) return p;
    p++;
  }
}

/** Attributes in one start tag beyond which duplicates are found with a Set rather than a scan. */
const ATTR_SCAN_LIMIT = 16;

// Scans with charCodeAt and lookup tables rather than sticky regular expressions: this parser runs on
// every hook call and filter run, and a regular expression call per name and per gap of whitespace
// was most of its time.
export function parseXml(src: string): XmlDocument {
  const prolog: XmlNode[] = [];
  const epilog: XmlNode[] = [];
  let root: XmlElement | null = null;
  const stack: XmlElement[] = [];
  /** Where each element on `stack` starts, to say where an unclosed one was opened. */
  const opened: number[] = [];
  /** How many child elements each element on `stack` has so far. */
  const childCounts: number[] = [];
  let i = 0;
  const n = src.length;
  let nodes = 0;

  const fail = (msg: string, at: number): never => {
    throw new XmlInputError(`${msg} (${position(src, at)})`);
  };
  const decodeAt = (raw: string, at: number): string => {
    try {
      return decodeEntities(raw);
    } catch (e: unknown) {
      return fail((e as Error).message, at);
    }
  };
  const count = (at: number): void => {
    if (++nodes > MAX_NODES) fail(`more than ${MAX_NODES} elements, attributes and text runs: not a libvirt domain`, at);
  };
  const add = (node: XmlNode): void => {
    count(i);
    const top = stack[stack.length - 1];
    if (top) {
      node.parent = top;
      top.children.push(node);
    } else if (node.kind === 'text' && !node.isWhitespace()) {
      fail('text outside the root element', i);
    } else (root ? epilog : prolog).push(node);
  };

  while (i < n) {
    const lt = src.indexOf('<', i);
    if (lt !== i) {
      const end = lt < 0 ? n : lt;
      const raw = src.slice(i, end);
      decodeAt(raw, i);
      add(new XmlText(raw));
      i = end;
      continue;
    }
    const next = src.charCodeAt(i + 1);
    if (next === 0x21 /* ! */) {
      if (src.startsWith('<!--', i)) {
        const end = src.indexOf('-->', i + 4);
        if (end < 0) fail('unterminated comment', i);
        add(new XmlRaw(src.slice(i, end + 3)));
        i = end + 3;
      } else if (src.startsWith('<![CDATA[', i)) {
        if (stack.length === 0) fail('CDATA outside the root element', i);
        const end = src.indexOf(']]>', i + 9);
        if (end < 0) fail('unterminated CDATA section', i);
        add(new XmlRaw(src.slice(i, end + 3)));
        i = end + 3;
      } else fail('DOCTYPE and entity declarations are refused', i);
    } else if (next === 0x3f /* ? */) {
      const end = src.indexOf('?>', i + 2);
      if (end < 0) fail('unterminated processing instruction', i);
      add(new XmlRaw(src.slice(i, end + 2)));
      i = end + 2;
    } else if (next === 0x2f /* / */) {
      const nameStop = nameEnd(src, i + 2);
      if (nameStop === i + 2) fail('malformed end tag', i);
      const name = src.slice(i + 2, nameStop);
      const close = spaceEnd(src, nameStop);
      if (src.charCodeAt(close) !== 0x3e /* > */) fail(`malformed end tag </${shown(name)}>`, i);
      const top = stack.pop();
      opened.pop();
      childCounts.pop();
      if (!top || top.name !== name) fail(`end tag </${shown(name)}> does not match <${shown(top?.name ?? '')}>`, i);
      top!.endRaw = src.slice(i, close + 1);
      i = close + 1;
    } else {
      const nameStop = nameEnd(src, i + 1);
      if (nameStop === i + 1) fail('malformed start tag', i);
      if (stack.length === 0 && root) fail('more than one root element', i);
      const el = new XmlElement(src.slice(i + 1, nameStop));
      const attrs = el.attrs;
      // Past ATTR_SCAN_LIMIT attributes, a Set: one start tag may carry many thousands of them.
      let seen: Set<string> | undefined;
      let p = nameStop;
      let selfClosing = false;
      for (;;) {
        const wsEnd = spaceEnd(src, p);
        const c = src.charCodeAt(wsEnd);
        if (c === 0x3e /* > */ || (c === 0x2f /* / */ && src.charCodeAt(wsEnd + 1) === 0x3e)) {
          el.startTail = src.slice(p, wsEnd);
          selfClosing = c === 0x2f;
          p = selfClosing ? wsEnd + 2 : wsEnd + 1;
          break;
        }
        if (wsEnd === p) fail(`malformed start tag <${shown(el.name)}>`, i);
        const anameStop = nameEnd(src, wsEnd);
        if (anameStop === wsEnd) fail(`malformed attribute in <${shown(el.name)}>`, wsEnd);
        const aname = src.slice(wsEnd, anameStop);
        const eq = spaceEnd(src, anameStop);
        if (src.charCodeAt(eq) !== 0x3d /* = */) fail(`attribute ${shown(aname)} of <${shown(el.name)}> has no value`, wsEnd);
        const quoteAt = spaceEnd(src, eq + 1);
        const q = src[quoteAt];
        if (q !== '"' && q !== "'") fail(`attribute ${shown(aname)} of <${shown(el.name)}> is not quoted`, wsEnd);
        const vstart = quoteAt + 1;
        const vend = src.indexOf(q!, vstart);
        if (vend < 0) fail(`unterminated attribute ${shown(aname)} of <${shown(el.name)}>`, wsEnd);
        const rawValue = src.slice(vstart, vend);
        if (rawValue.includes('<')) fail(`attribute ${shown(aname)} of <${shown(el.name)}> contains '<'`, wsEnd);
        let duplicate = false;
        if (seen) duplicate = seen.has(aname);
        else {
          for (const a of attrs) if (a.name === aname) duplicate = true;
          if (attrs.length >= ATTR_SCAN_LIMIT) seen = new Set(attrs.map((a) => a.name));
        }
        if (duplicate) fail(`duplicate attribute ${shown(aname)} in <${shown(el.name)}>`, wsEnd);
        seen?.add(aname);
        count(wsEnd);
        attrs.push({ name: aname, value: decodeAt(rawValue, vstart), raw: src.slice(p, vend + 1) });
        p = vend + 1;
      }
      // Attributes this program adds use the quote the element (else the document) already uses.
      const firstAttr = attrs[0];
      if (firstAttr) el.quote = firstAttr.raw.endsWith('"') ? '"' : "'";
      else if (root) el.quote = root.quote;
      if (stack.length === 0) root = el;
      else {
        add(el);
        const siblings = ++childCounts[childCounts.length - 1]!;
        if (siblings > MAX_CHILDREN) fail(`<${shown(stack[stack.length - 1]!.name)}> has more than ${MAX_CHILDREN} child elements`, i);
      }
      if (!selfClosing) {
        // Replaced by the source's own end tag when it is read.
        el.endRaw = `</${el.name}>`;
        stack.push(el);
        opened.push(i);
        childCounts.push(0);
        if (stack.length > MAX_DEPTH) fail(`elements nest deeper than ${MAX_DEPTH} levels`, i);
      }
      i = p;
    }
  }
  if (stack.length > 0) fail(`<${shown(stack[stack.length - 1]!.name)}> is never closed`, opened[opened.length - 1]!);
  if (!root) throw new XmlInputError('no root element');
  return new XmlDocument(prolog, root, epilog);
}

// ---------------------------------------------------------------- entities

const NAMED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

export function decodeEntities(raw: string): string {
  if (!raw.includes('&')) return raw;
  // The body is optional so that a bare '&' matches too: it is not well-formed XML.
  return raw.replace(/&(#x[0-9A-Fa-f]+|#[0-9]+|[A-Za-z][A-Za-z0-9]*)?;?/g, (whole, body: string | undefined) => {
    if (body === undefined || !whole.endsWith(';')) throw new XmlInputError(`malformed entity reference '${shown(whole)}'`);
    if (body.startsWith('#')) {
      const code = body[1] === 'x' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      if (!Number.isFinite(code) || code > 0x10ffff) throw new XmlInputError(`bad character reference '${shown(whole)}'`);
      return String.fromCodePoint(code);
    }
    const v = NAMED[body];
    if (v === undefined) throw new XmlInputError(`undefined entity '&${shown(body)};'`);
    return v;
  });
}

export function escapeText(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function escapeAttr(value: string, quote: "'" | '"'): string {
  const s = value.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  return quote === "'" ? s.replace(/'/g, '&apos;') : s.replace(/"/g, '&quot;');
}
