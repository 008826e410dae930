// libvirt's scaled integers (virScaleInteger): unit suffixes are case-insensitive,
// 'KB' is 1000 and 'k'/'KiB' 1024, and a missing unit means KiB for memory.

import type { XmlElement } from '../xml/xmlapi.js';
import { fail, refuse } from '../failure.js';

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

/**
 * A size such as 4GiB, 512MiB, 4G or 1000000KB, with libvirt's unit rules
 * (k/KiB = 1024, KB = 1000, b = bytes; no unit means KiB), in KiB rounded up.
 */
export function parseSize(text: string, option: string): number {
  const m = /^\s*([0-9]+)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!m) fail({ kind: 'usage', message: `${option} '${text}' is not a size such as 4GiB or 512MiB` });
  const scale = unitBytes(m[2] === '' ? undefined : m[2]);
  if (scale === undefined) fail({ kind: 'usage', message: `${option} '${text}': unknown unit '${m[2]}' (use KiB, MiB, GiB, TiB, or KB, MB, GB, TB)` });
  const kib = Math.ceil((Number(m[1]) * scale) / 1024);
  if (!Number.isSafeInteger(kib)) fail({ kind: 'usage', message: `${option} '${text}' is too large` });
  return kib;
}

/**
 * QEMU's process overhead (--qemu-overhead): a size with its unit. A bare number
 * would be KiB by libvirt's rules, far too little for QEMU, and a guest given too
 * little is killed at start; so the unit is required.
 */
export function parseOverheadSize(text: string, option: string): number {
  if (/^\s*[0-9]+\s*$/.test(text)) fail({ kind: 'usage', message: `${option} '${text}' needs a unit, e.g. 256MiB (a bare number would be KiB)` });
  return parseSize(text, option);
}

/**
 * KiB as MiB to a tenth (whole numbers without one), rounded up for what is needed
 * and down for what is available, so that a plan never looks roomier than it is.
 */
export function mib(kib: number, round: 'up' | 'down' = 'up'): string {
  const m = kib / 1024;
  if (Number.isInteger(m)) return `${m} MiB`;
  const tenths = round === 'up' ? Math.ceil(m * 10) : Math.floor(m * 10);
  return `${tenths % 10 === 0 ? tenths / 10 : (tenths / 10).toFixed(1)} MiB`;
}
