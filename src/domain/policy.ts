// The SEV guest policy (AMD SEV API spec, chapter 3): a 32-bit word of which
// the low 16 bits are flags and the high 16 the minimum firmware version.

import { refuse } from '../failure.js';

export const POLICY_NODBG = 0x1;
export const POLICY_NOKS = 0x2;
export const POLICY_ES = 0x4;
/** Bits 6-15: reserved, must be zero or the firmware rejects the launch. */
export const POLICY_RESERVED = 0xffc0;

/** NODBG|NOKS|DOMAIN|SEV: no debugging, no key sharing, stays in this domain of SEV hosts. */
export const DEFAULT_SEV_POLICY = 0x0033;
/** The same plus ES: register state encrypted too. */
export const DEFAULT_SEV_ES_POLICY = 0x0037;

export function parsePolicy(text: string, where: string): number {
  const t = text.trim();
  if (!/^(0x)?[0-9a-fA-F]{1,8}$/.test(t)) refuse(where, `policy '${text}' is not a hexadecimal number such as 0x0033`);
  const n = parseInt(t.replace(/^0x/i, ''), 16);
  if (n & POLICY_RESERVED)
    refuse(where, `policy ${formatPolicy(n)} sets reserved bits 6-15 (${formatPolicy(n & POLICY_RESERVED)}); the SEV firmware rejects it`);
  return n;
}

export function formatPolicy(n: number): string {
  return '0x' + n.toString(16).padStart(4, '0');
}
