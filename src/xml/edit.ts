// Edits that keep a document looking as if its own author wrote them:
// inserted elements take the indentation of their neighbours, removed
// elements take their leading whitespace with them, nothing else moves.

import { XmlElement, XmlText, type XmlNode } from './xmlapi.js';

type Attrs = ReadonlyArray<readonly [string, string]>;

/**
 * A new element, written with `quote` for its attributes. `content` is either
 * text or child elements; children are indented when the element is inserted.
 */
export function createElement(
  name: string,
  attrs: Attrs = [],
  content?: string | XmlElement[],
  quote: "'" | '"' = "'",
): XmlElement {
  const el = new XmlElement(name);
  el.fresh = true;
  el.quote = quote;
  for (const [k, v] of attrs) el.setAttr(k, v);
  if (typeof content === 'string') el.setText(content);
  else if (content) for (const c of content) appendRawChild(el, c);
  return el;
}

function appendRawChild(parent: XmlElement, child: XmlNode): void {
  child.parent = parent;
  parent.children.push(child);
}

/** Whitespace before `el` in its parent, if that is all whitespace. */
function leadingSpace(el: XmlElement): XmlText | undefined {
  const p = el.parent;
  if (!p) return undefined;
  const prev = p.children[p.children.indexOf(el) - 1];
  return prev && prev.kind === 'text' && prev.isWhitespace() ? prev : undefined;
}

/** The last line break of `ws` (CRLF kept whole) and the indentation after it. */
function lastLine(ws: string): string {
  const i = ws.lastIndexOf('\n');
  if (i < 0) return ws;
  return ws.slice(i > 0 && ws[i - 1] === '\r' ? i - 1 : i);
}

/** Indentation of an element: the text after the last newline before it. */
function indentOf(el: XmlElement): string {
  const ws = leadingSpace(el);
  if (!ws) return '';
  const i = ws.raw.lastIndexOf('\n');
  return i < 0 ? '' : ws.raw.slice(i + 1);
}

function root(el: XmlElement): XmlElement {
  let r = el;
  while (r.parent) r = r.parent;
  return r;
}

/** Newline and one indentation step of the document, '' for a one-line document. */
const layouts = new WeakMap<XmlElement, { nl: string; unit: string }>();

function layout(el: XmlElement): { nl: string; unit: string } {
  const r = root(el);
  let found = layouts.get(r);
  if (!found) layouts.set(r, (found = measureLayout(r)));
  return found;
}

function measureLayout(top: XmlElement): { nl: string; unit: string } {
  // Take the step from the shallowest element that has indented children.
  const queue: XmlElement[] = [top];
  for (let q = 0; q < queue.length && q < 64; q++) {
    const cur = queue[q]!;
    const kids = cur.elements();
    const first = kids[0];
    if (first) {
      const ws = leadingSpace(first);
      if (ws && ws.raw.includes('\n')) {
        const nl = ws.raw.includes('\r\n') ? '\r\n' : '\n';
        const inner = ws.raw.slice(ws.raw.lastIndexOf('\n') + 1);
        const outer = indentOf(cur);
        const unit = inner.startsWith(outer) && inner.length > outer.length ? inner.slice(outer.length) : '  ';
        return { nl, unit };
      }
    }
    queue.push(...kids);
  }
  return { nl: '', unit: '' };
}

/** Rewrites a fresh element's attributes with the quote the document uses. */
function requote(el: XmlElement, quote: "'" | '"'): void {
  if (el.quote === quote) return;
  const attrs = el.attrs;
  el.attrs = [];
  el.quote = quote;
  for (const a of attrs) el.setAttr(a.name, a.value);
}

/** Lays out a fresh element's children, one per line, at `indent` plus one step. */
function formatFresh(el: XmlElement, indent: string, nl: string, unit: string, quote: "'" | '"'): void {
  if (!el.fresh) return;
  requote(el, quote);
  const kids = el.elements();
  if (kids.length === 0 || nl === '') {
    for (const k of kids) formatFresh(k, indent, nl, unit, quote);
    return;
  }
  const inner = indent + unit;
  const out: XmlNode[] = [];
  for (const k of kids) {
    out.push(Object.assign(new XmlText(nl + inner), { parent: el }));
    out.push(k);
    formatFresh(k, inner, nl, unit, quote);
  }
  out.push(Object.assign(new XmlText(nl + indent), { parent: el }));
  el.children = out;
}

function spliceIn(parent: XmlElement, at: number, nodes: XmlNode[]): void {
  for (const n of nodes) n.parent = parent;
  parent.children.splice(at, 0, ...nodes);
}

/** Inserts `child` right after the element `ref` (a child of `parent`). */
export function insertAfter(parent: XmlElement, ref: XmlElement, child: XmlElement): void {
  const ws = leadingSpace(ref);
  const sep = ws ? lastLine(ws.raw) : '';
  const { nl, unit } = layout(parent);
  formatFresh(child, indentOf(ref), nl, unit, root(parent).quote);
  spliceIn(parent, parent.children.indexOf(ref) + 1, sep ? [new XmlText(sep), child] : [child]);
}

/** Inserts `child` right before the element `ref` (a child of `parent`). */
export function insertBefore(parent: XmlElement, ref: XmlElement, child: XmlElement): void {
  const ws = leadingSpace(ref);
  const sep = ws ? lastLine(ws.raw) : '';
  const { nl, unit } = layout(parent);
  formatFresh(child, indentOf(ref), nl, unit, root(parent).quote);
  spliceIn(parent, parent.children.indexOf(ref), sep ? [child, new XmlText(sep)] : [child]);
}

/**
 * Makes `child` the first element of `parent`, on its own line when the
 * document has lines. Comments already inside stay, before the child.
 */
function insertIntoEmpty(parent: XmlElement, child: XmlElement): void {
  const { nl, unit } = layout(parent);
  const outer = indentOf(parent);
  const inner = outer + unit;
  formatFresh(child, inner, nl, unit, root(parent).quote);
  if (parent.endRaw === null) parent.endRaw = `</${parent.name}>`;
  if (parent.children.every((c) => c.kind === 'text' && c.isWhitespace())) {
    for (const c of parent.children) c.parent = null;
    parent.children = [];
    spliceIn(parent, 0, nl ? [new XmlText(nl + inner), child, new XmlText(nl + outer)] : [child]);
    return;
  }
  // Keep the closing line's whitespace last; the child goes on a line of its own before it.
  const last = parent.children[parent.children.length - 1];
  const trailing = last && last.kind === 'text' && last.isWhitespace() ? last : undefined;
  const at = trailing ? parent.children.length - 1 : parent.children.length;
  const lead = trailing ? lastLine(trailing.raw) + unit : nl ? nl + inner : '';
  spliceIn(parent, at, lead ? [new XmlText(lead), child] : [child]);
  if (!trailing && nl) spliceIn(parent, parent.children.length, [new XmlText(nl + outer)]);
}

/**
 * Inserts `child` where libvirt would print it: after the last sibling that
 * `order` puts at or before it, else before the first one it puts after it.
 * Names not in `order` are never used as anchors; without any anchor the
 * child goes last.
 */
export function insertOrdered(parent: XmlElement, child: XmlElement, order: readonly string[]): void {
  const kids = parent.elements();
  if (kids.length === 0) {
    insertIntoEmpty(parent, child);
    return;
  }
  const rank = order.indexOf(child.name);
  if (rank >= 0) {
    let after: XmlElement | undefined;
    let before: XmlElement | undefined;
    for (const k of kids) {
      const r = order.indexOf(k.name);
      if (r < 0) continue;
      if (r <= rank) after = k;
      else if (!before) before = k;
    }
    if (after) return insertAfter(parent, after, child);
    if (before) return insertBefore(parent, before, child);
  }
  insertAfter(parent, kids[kids.length - 1]!, child);
}

/** Removes an element together with the whitespace that introduced it. */
export function removeElement(el: XmlElement): void {
  const p = el.parent;
  if (!p) throw new Error('cannot remove the root element');
  const ws = leadingSpace(el);
  p.children = p.children.filter((c) => c !== el && c !== ws);
  el.parent = null;
  if (p.children.every((c) => c.kind === 'text' && c.isWhitespace())) {
    p.children = [];
    p.endRaw = null;
  }
}

/** The first child named `name`, created in libvirt's order when missing. */
export function ensureChild(parent: XmlElement, name: string, order: readonly string[]): XmlElement {
  const found = parent.first(name);
  if (found) return found;
  const el = createElement(name, [], undefined, parent.quote);
  insertOrdered(parent, el, order);
  return el;
}
