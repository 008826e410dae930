// The memory an SEV guest needs, shared by the filter's hard_limit, `plan` and
// the hook's admission check, so that the three can never disagree.
//
// Two parts: what SEV pins (guest RAM, video memory, QEMU's ROMs and ACPI
// tables: resident from launch, never swapped), and the ceiling libvirt puts on
// the whole QEMU process (<memtune><hard_limit> is its memory cgroup limit and
// its RLIMIT_MEMLOCK), which must also hold QEMU's own memory.

import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import { sizeKiB, unitBytes } from './units.js';

/**
 * What QEMU pins beside guest RAM: UEFI ROM 4096 KiB, UEFI var store 4096 KiB,
 * pc.rom 128 KiB, isa-bios 128 KiB, ACPI tables 2384 KiB = 10832 KiB, rounded
 * up to 16 MiB so at least 256 KiB of padding remain.
 */
export const ROM_ACPI_KIB = 16 * 1024;

/**
 * QEMU's own process memory above the pinned part, by default: the fixed part
 * (--qemu-overhead, qemu_overhead_mib). Measured here (QEMU 7.2, RAM preallocated
 * in a memory cgroup): paused +34..+52 MiB over RAM, running into OVMF +53..+85
 * MiB, plus 130 MiB of qxl/VGA blocks that SEV pins; at RAM + 16 MiB QEMU was
 * OOM-killed before the guest ran. 256 MiB is what libvirt's SEV page calls a
 * good starting point and what KubeVirt adds; it leaves room for vhost,
 * iothreads and TLS buffers that the measurements did not exercise.
 */
export const DEFAULT_QEMU_OVERHEAD_MIB = 256;
export const DEFAULT_QEMU_OVERHEAD_KIB = DEFAULT_QEMU_OVERHEAD_MIB * 1024;

/**
 * The part of QEMU's footprint that grows with guest RAM: 1/256 of it. QEMU's
 * page tables for preallocated RAM take RAM/512 (8 bytes per 4 KiB page;
 * measured footprint +27 MiB at 1 GiB, +31 at 4 GiB, +55..+77 at 16 GiB), and
 * KVM's nested page tables up to another RAM/512, charged to the same cgroup.
 * A fixed overhead alone is outgrown by a large guest.
 */
export const PAGE_TABLE_DIVISOR = 256;

/** QEMU's and KVM's page tables for `ramKiB` of guest RAM, in KiB. */
export function pageTablesKiB(ramKiB: number): number {
  return Math.ceil(ramKiB / PAGE_TABLE_DIVISOR);
}

/** Video RAM libvirt assumes when a model gives none (virDomainVideoDefaultRAM). */
const DEFAULT_VIDEO_KIB: Record<string, number> = {
  qxl: 65536 + 65536 + 16384,
  vga: 16384,
  cirrus: 16384,
  vmvga: 16384,
  bochs: 16384,
};

export function videoKiB(video: XmlElement): number {
  const model = video.first('model');
  if (!model) return 0;
  let sum = 0;
  let any = false;
  for (const attr of ['ram', 'vram', 'vram64', 'vgamem']) {
    const v = model.attr(attr);
    if (v === undefined) continue;
    if (!/^[0-9]+$/.test(v)) refuse(model.path(), `${attr}='${v}' is not a whole number of KiB`);
    sum += Number(v);
    any = true;
  }
  return any ? sum : DEFAULT_VIDEO_KIB[model.attr('type') ?? ''] ?? 0;
}

/**
 * The sum of the NUMA cells' memory, or undefined without cells. libvirt
 * sizes the guest from its cells when it has them (virDomainDefGetMemoryInitial),
 * and accepts a domain whose only memory size is in its cells.
 */
function numaCellsKiB(domain: XmlElement): number | undefined {
  const cells = domain.first('cpu')?.first('numa')?.elements('cell') ?? [];
  if (cells.length === 0) return undefined;
  let sum = 0;
  for (const cell of cells) {
    const value = cell.attr('memory');
    const unit = cell.attr('unit');
    if (value === undefined) refuse(cell.path(), 'has no memory attribute: cannot size the pinned memory');
    if (!/^[0-9]+$/.test(value.trim())) refuse(cell.path(), `memory '${value}' is not a whole number`);
    const scale = unitBytes(unit);
    if (scale === undefined) refuse(cell.path(), `unknown unit '${unit ?? ''}'`);
    sum += Math.ceil((Number(value.trim()) * scale) / 1024);
  }
  return sum;
}

/** Guest RAM in KiB: the NUMA cells' sum or <memory>, and the hot-plug ceiling <maxMemory> when larger. */
export function guestRamKiB(domain: XmlElement): number {
  const memory = domain.first('memory');
  const cells = numaCellsKiB(domain);
  if (!memory && cells === undefined) refuse('domain/memory', 'missing, and no <cpu><numa> cells give the size: cannot size the pinned memory');
  let ram = cells ?? sizeKiB(memory!);
  const max = domain.first('maxMemory');
  if (max) ram = Math.max(ram, sizeKiB(max));
  return ram;
}

export interface MemoryBudget {
  ramKiB: number;
  videoKiB: number;
  /** QEMU's ROMs and ACPI tables (ROM_ACPI_KIB). */
  romKiB: number;
  /** What SEV pins: RAM + video + ROM/ACPI. */
  pinnedKiB: number;
  /** The fixed part of QEMU's process overhead (--qemu-overhead, qemu_overhead_mib). */
  fixedOverheadKiB: number;
  /** The part that grows with RAM: QEMU's and KVM's page tables, RAM/256. */
  pageTablesKiB: number;
  /** QEMU's own process memory allowed above the pinned part: fixed + page tables. */
  overheadKiB: number;
  /** The whole QEMU process: pinned + overhead; the hard_limit the filter writes. */
  ceilingKiB: number;
}

/**
 * The budget for a guest of `ramKiB` RAM and `videoKiB` video memory: the one
 * formula behind the filter, `plan` (also for --guests), `check` and the hook.
 */
export function budgetFor(ramKiB: number, videoKiB: number, fixedOverheadKiB: number = DEFAULT_QEMU_OVERHEAD_KIB): MemoryBudget {
  const pinnedKiB = ramKiB + videoKiB + ROM_ACPI_KIB;
  const tables = pageTablesKiB(ramKiB);
  const overheadKiB = fixedOverheadKiB + tables;
  return { ramKiB, videoKiB, romKiB: ROM_ACPI_KIB, pinnedKiB, fixedOverheadKiB, pageTablesKiB: tables, overheadKiB, ceilingKiB: pinnedKiB + overheadKiB };
}

/** The memory one SEV guest needs; `fixedOverheadKiB` is the fixed part of QEMU's overhead (--qemu-overhead, qemu_overhead_mib). */
export function memoryBudget(domain: XmlElement, fixedOverheadKiB: number = DEFAULT_QEMU_OVERHEAD_KIB): MemoryBudget {
  const ramKiB = guestRamKiB(domain);
  const video = (domain.first('devices')?.elements('video') ?? []).reduce((s, v) => s + videoKiB(v), 0);
  return budgetFor(ramKiB, video, fixedOverheadKiB);
}

/**
 * What the hook counts for a guest against the host's memory: its ceiling, or
 * its own hard_limit when that is larger (a limit is what the guest may use).
 */
export function countedMemoryKiB(domain: XmlElement, overheadKiB: number = DEFAULT_QEMU_OVERHEAD_KIB): number {
  const hard = domain.first('memtune')?.first('hard_limit');
  return Math.max(memoryBudget(domain, overheadKiB).ceilingKiB, hard ? sizeKiB(hard) : 0);
}
