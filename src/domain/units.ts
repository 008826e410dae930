// libvirt's scaled integers (virScaleInteger): unit suffixes are case-insensitive,
// 'KB' is 1000 and 'k'/'KiB' 1024, and a missing unit means KiB for memory.

import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';

const POWERS: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

export function unitBytes(unit: string | undefined): number | undefined {
  const u = (unit ?? 'KiB').trim().toLowerCase();
  if (u === 'b' || u === 'bytes') return 1;
  const p = POWERS[u[0] ?? ''];
  if (p === undefined) return undefined;
  const rest = u.slice(1);
  if (rest === '' || rest === 'ib') return 1024 ** p;
  if (rest === 'b') return 1000 ** p;
  return undefined;
}

/** The element's size in KiB, rounded up; refuses a value libvirt would not parse. */
export function sizeKiB(el: XmlElement): number {
  const text = el.text().trim();
  const unit = el.attr('unit');
  const scale = unitBytes(unit);
  if (!/^[0-9]+$/.test(text)) refuse(el.path(), `'${text}' is not a whole number`);
  if (scale === undefined) refuse(el.path(), `unknown unit '${unit ?? ''}'`);
  return Math.ceil((Number(text) * scale) / 1024);
}
