// Memory and SEV slot planning: how much host memory a set of SEV guests pins
// and may use, and how many ASID slots they take, with the same accounting as
// the filter's hard_limit and the hook's admission check (src/domain/memory.ts),
// so a plan that fits is one the hook will let start.

import { fail, FailureError } from './failure.js';
import { mib } from './domain/units.js';
import { POLICY_ES, parsePolicy } from './domain/policy.js';
import { findTag } from './domain/tag.js';
import { budgetFor, countedMemoryKiB, memoryBudget } from './domain/memory.js';
import type { SevCaps } from './host/domcaps.js';
import type { XmlElement } from './xml/xmlapi.js';

export { mib, parseSize } from './domain/units.js';

/** One guest, or `count` identical ones (from --guests). Sizes are per guest, in KiB. */
export interface PlannedGuest {
  name: string;
  /** The file it came from, or '--guests'. */
  source: string;
  count: number;
  /** True when its policy sets the SEV-ES bit 0x4, or it is SEV-SNP: it takes a slot from the SEV-ES pool. */
  es: boolean;
  /** Present (true) for SEV-SNP guests, which take their slots from the SEV-ES range too. */
  snp?: true;
  ramKiB: number;
  videoKiB: number;
  /** QEMU's ROMs and ACPI tables, pinned beside RAM. */
  romKiB: number;
  /** What SEV pins: RAM + video + ROM/ACPI. */
  pinnedKiB: number;
  /** The fixed part of QEMU's overhead (--qemu-overhead, qemu_overhead_mib). */
  fixedOverheadKiB: number;
  /** QEMU's and KVM's page tables: RAM/256. */
  pageTablesKiB: number;
  /** QEMU's own process memory above the pinned part: fixed + page tables. */
  overheadKiB: number;
  /** The whole QEMU process: pinned + overhead, the hard_limit the filter writes. */
  ceilingKiB: number;
  /** An existing <memtune><hard_limit> above the ceiling: the hook counts that instead. */
  hardLimitKiB: number | null;
  /** What the hook counts for one such guest: the larger of its ceiling and its hard_limit. */
  countedKiB: number;
}

export interface SkippedDomain {
  source: string;
  reason: string;
}

export interface PlanInput {
  guests: readonly PlannedGuest[];
  skipped: readonly SkippedDomain[];
  hostReserveKiB: number;
  hostReserveSource: string;
  memTotalKiB: number;
  memTotalSource: string;
  /** The host's <sev> capabilities, or null when neither --domcaps nor a host cache gave them. */
  caps: SevCaps | null;
  /** Where caps came from (a file), or why there are none. */
  capsSource: string;
}

export interface SlotCheck {
  needed: number;
  /** null: the host does not say (no domcaps, or libvirt < 8.0). */
  available: number | null;
  /** null when it cannot be checked. */
  fits: boolean | null;
}

export interface Plan {
  fits: boolean;
  /** One sentence per thing that does not fit. */
  problems: string[];
  guests: PlannedGuest[];
  skipped: SkippedDomain[];
  memory: {
    /** What the guests may use in all (their counted memory). */
    guestsKiB: number;
    /** The part of it SEV pins. */
    pinnedKiB: number;
    hostReserveKiB: number;
    hostReserveSource: string;
    neededKiB: number;
    memTotalKiB: number;
    memTotalSource: string;
    /** MemTotal minus what is needed; negative when it does not fit. */
    spareKiB: number;
    fits: boolean;
  };
  slots: {
    source: string;
    supported: boolean | null;
    sev: SlotCheck;
    sevEs: SlotCheck;
  };
}

/** `count` guests of the same size (the --guests form). */
export function countedGuests(count: number, ramKiB: number, videoKiBEach: number, policy: number, fixedOverheadKiB: number, snp = false): PlannedGuest {
  const b = budgetFor(ramKiB, videoKiBEach, fixedOverheadKiB);
  return {
    name: 'guest',
    source: '--guests',
    count,
    es: snp || (policy & POLICY_ES) !== 0,
    ...(snp ? { snp: true as const } : {}),
    ...b,
    hardLimitKiB: null,
    countedKiB: b.ceilingKiB,
  };
}

/**
 * Which slot pool an SEV domain draws on, decided as the filter decides its
 * policy (the tag's policy, then the domain's launchSecurity, then the tag's
 * model); SEV-SNP guests take their ASIDs from the SEV-ES pool.
 */
function wantsSnp(domain: XmlElement): boolean {
  const tag = findTag(domain);
  const model = tag?.attr('model');
  if (model === 'sev-snp' || tag?.attr('snp-policy') !== undefined) return true;
  return model === undefined && domain.first('launchSecurity')?.attr('type') === 'sev-snp';
}

function wantsEs(domain: XmlElement): boolean {
  const tag = findTag(domain);
  const ls = domain.first('launchSecurity');
  if (wantsSnp(domain)) return true;
  const tagPolicy = tag?.attr('policy');
  if (tagPolicy !== undefined) return (parsePolicy(tagPolicy, `${tag!.path()} policy`) & POLICY_ES) !== 0;
  const policy = ls?.first('policy');
  if (policy) return (parsePolicy(policy.text(), policy.path()) & POLICY_ES) !== 0;
  return tag?.attr('model') === 'sev-es';
}

/** The planned guest for an SEV domain (tagged, or with launchSecurity); the caller decides which domains are SEV. */
export function domainGuest(domain: XmlElement, source: string, overheadKiB: number): PlannedGuest {
  const name = domain.first('name')?.text().trim() || source;
  try {
    const b = memoryBudget(domain, overheadKiB);
    const counted = countedMemoryKiB(domain, overheadKiB);
    return {
      name,
      source,
      count: 1,
      es: wantsEs(domain),
      ...(wantsSnp(domain) ? { snp: true as const } : {}),
      ...b,
      hardLimitKiB: counted > b.ceilingKiB ? counted : null,
      countedKiB: counted,
    };
  } catch (e: unknown) {
    // The rules name the element; the operator also needs the file.
    if (e instanceof FailureError && e.failure.kind === 'refused') fail({ ...e.failure, element: `${source}: ${e.failure.element}` });
    throw e;
  }
}

function slotCheck(needed: number, available: number | undefined, known: boolean): SlotCheck {
  if (!known || available === undefined) return { needed, available: null, fits: null };
  return { needed, available, fits: needed <= available };
}

export function makePlan(input: PlanInput): Plan {
  const guestsKiB = input.guests.reduce((s, g) => s + g.count * g.countedKiB, 0);
  const pinned = input.guests.reduce((s, g) => s + g.count * g.pinnedKiB, 0);
  const needed = guestsKiB + input.hostReserveKiB;
  const memoryFits = needed <= input.memTotalKiB;
  const sevNeeded = input.guests.filter((g) => !g.es).reduce((s, g) => s + g.count, 0);
  const esNeeded = input.guests.filter((g) => g.es).reduce((s, g) => s + g.count, 0);
  const caps = input.caps;
  const supported = caps ? caps.supported : null;
  const known = caps !== null && caps.supported;
  const sev = slotCheck(sevNeeded, caps?.maxGuests, known);
  const sevEs = slotCheck(esNeeded, caps?.maxESGuests, known);

  const problems: string[] = [];
  if (!memoryFits)
    problems.push(
      `memory: ${mib(guestsKiB)} for the SEV guests + ${mib(input.hostReserveKiB)} host reserve = ${mib(needed)}, ${mib(needed - input.memTotalKiB)} more than MemTotal ${mib(input.memTotalKiB, 'down')} (${input.memTotalSource})`,
    );
  if (caps !== null && !caps.supported && sevNeeded + esNeeded > 0)
    problems.push(`slots: the host cannot run SEV guests (<sev supported='no'> in ${input.capsSource}); see \`sev-xform host\``);
  if (sev.fits === false)
    problems.push(
      `slots: ${sev.needed} SEV guest(s) need ${sev.needed} slot(s), the host has ${sev.available} (<maxGuests> in ${input.capsSource})${
        sev.available === 0 ? ': none can start (leave SEV ASIDs in the firmware setup; hosts that only emulate SEV report 0)' : ''
      }`,
    );
  if (sevEs.fits === false)
    problems.push(
      `slots: ${sevEs.needed} ${esLabel(input.guests)} guest(s) need ${sevEs.needed} slot(s), the host has ${sevEs.available} (<maxESGuests> in ${input.capsSource})${
        sevEs.available === 0 ? ': none can start (raise the SEV-ES ASID Space Limit in the firmware setup)' : ''
      }`,
    );
  return {
    fits: problems.length === 0,
    problems,
    guests: [...input.guests],
    skipped: [...input.skipped],
    memory: {
      guestsKiB,
      pinnedKiB: pinned,
      hostReserveKiB: input.hostReserveKiB,
      hostReserveSource: input.hostReserveSource,
      neededKiB: needed,
      memTotalKiB: input.memTotalKiB,
      memTotalSource: input.memTotalSource,
      spareKiB: input.memTotalKiB - needed,
      fits: memoryFits,
    },
    slots: { source: input.capsSource, supported, sev, sevEs },
  };
}

/** SEV-SNP guests share the SEV-ES range: name both when any SEV-SNP guest is planned. */
function esLabel(guests: readonly PlannedGuest[]): string {
  return guests.some((g) => g.snp) ? 'SEV-ES/SEV-SNP' : 'SEV-ES';
}

function guestLine(g: PlannedGuest): string {
  const kind = g.snp ? 'SEV-SNP' : g.es ? 'SEV-ES' : 'SEV';
  const sum = `${mib(g.ramKiB)} RAM + ${mib(g.videoKiB)} video + ${mib(g.romKiB)} ROM/ACPI = ${mib(g.pinnedKiB)} pinned + ${mib(g.fixedOverheadKiB)} QEMU process + ${mib(g.pageTablesKiB)} page tables (RAM/256) = ${mib(g.ceilingKiB)} ceiling`;
  const hard = g.hardLimitKiB !== null ? `; its hard_limit ${mib(g.hardLimitKiB)} is larger and counts` : '';
  if (g.source === '--guests') return `guests   ${g.count} x ${kind} (--guests): ${sum} each${hard}, ${mib(g.count * g.countedKiB)} in all`;
  return `guest    ${g.name} (${g.source}): ${kind}, ${sum}${hard}`;
}

function slotLine(kind: string, element: string, s: SlotCheck, source: string): string {
  if (s.available === null) return `slots    ${kind}: ${s.needed} needed; the host does not report <${element}> (libvirt < 8.0): not checked`;
  return `slots    ${kind}: ${s.needed} needed, ${s.available} available (<${element}> in ${source}): ${s.fits ? 'fits' : 'does not fit'}`;
}

export function renderPlan(p: Plan): string {
  const lines = p.guests.map(guestLine);
  for (const s of p.skipped) lines.push(`skipped  ${s.source}: ${s.reason}`);
  const count = p.guests.reduce((s, g) => s + g.count, 0);
  const m = p.memory;
  lines.push(
    `memory   ${mib(m.guestsKiB)} for ${count} guest(s) (${mib(m.pinnedKiB)} of it pinned) + ${mib(m.hostReserveKiB)} host reserve (${m.hostReserveSource}) = ${mib(m.neededKiB)} of MemTotal ${mib(m.memTotalKiB, 'down')} (${m.memTotalSource}): ${
      m.fits ? `fits, ${mib(m.spareKiB, 'down')} spare` : `does not fit, ${mib(-m.spareKiB)} short`
    }`,
  );
  if (p.slots.supported === null) lines.push(`slots    not checked: ${p.slots.source}`);
  else if (!p.slots.supported) lines.push(`slots    the host cannot run SEV guests (<sev supported='no'> in ${p.slots.source})`);
  else {
    lines.push(slotLine('SEV', 'maxGuests', p.slots.sev, p.slots.source));
    lines.push(slotLine(esLabel(p.guests), 'maxESGuests', p.slots.sevEs, p.slots.source));
  }
  lines.push(p.fits ? 'verdict  fits' : `verdict  does not fit (${p.problems.map((x) => x.replace(/:.*/, '')).filter((x, i, a) => a.indexOf(x) === i).join(', ')})`);
  return lines.join('\n') + '\n';
}

/** MemTotal in KiB from /proc/meminfo text. */
export function memTotalFromMeminfo(text: string, path: string): number {
  const m = /^MemTotal:\s+([0-9]+)\s*kB\s*$/m.exec(text);
  if (!m) fail({ kind: 'io', what: path, message: 'no MemTotal line; pass --mem-total SIZE' });
  return Number(m[1]);
}
