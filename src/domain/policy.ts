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

// The SEV-SNP guest policy (SEV-SNP firmware ABI, section 4.3, as libvirt's
// formatdomain documents it): 64 bits, so it is held as a bigint.

/** Bits 7:0 and 15:8: the minimum ABI minor and major version. */
export const SNP_POLICY_ABI = 0xffffn;
/** Bit 16: SMT allowed. */
export const SNP_POLICY_SMT = 1n << 16n;
/** Bit 17: reserved, must be set, or the firmware refuses SNP_LAUNCH_START (libvirt 11 does not check it). */
export const SNP_POLICY_RESERVED_ONE = 1n << 17n;
/** Bit 19: debugging allowed: the host can then read and write guest memory. */
export const SNP_POLICY_DEBUG = 1n << 19n;
/** Bits 63:25: reserved, must be zero. */
export const SNP_POLICY_RESERVED_ZERO = ((1n << 64n) - 1n) ^ ((1n << 25n) - 1n);

/** SMT allowed plus the mandatory bit 17, no minimum ABI version: QEMU's own default. */
export const DEFAULT_SNP_POLICY = 0x30000n;

export function formatSnpPolicy(n: bigint): string {
  // libvirt prints the SNP policy with eight hex digits (its docs: 0x00030000).
  return '0x' + n.toString(16).padStart(8, '0');
}

export function parseSnpPolicy(text: string, where: string): bigint {
  const t = text.trim();
  if (!/^(0x)?[0-9a-fA-F]{1,16}$/.test(t)) refuse(where, `SEV-SNP policy '${text}' is not a hexadecimal number of at most 64 bits such as 0x30000`);
  const n = BigInt('0x' + t.replace(/^0x/i, ''));
  if (n & SNP_POLICY_RESERVED_ZERO)
    refuse(where, `SEV-SNP policy ${formatSnpPolicy(n)} sets reserved bits 25-63 (${formatSnpPolicy(n & SNP_POLICY_RESERVED_ZERO)}); the firmware rejects it`);
  if (!(n & SNP_POLICY_RESERVED_ONE))
    refuse(where, `SEV-SNP policy ${formatSnpPolicy(n)} leaves bit 17 (0x20000) clear; the firmware ABI requires it set, so the launch would fail (e.g. ${formatSnpPolicy(n | SNP_POLICY_RESERVED_ONE)})`);
  return n;
}
