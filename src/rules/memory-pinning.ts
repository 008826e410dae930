import { createElement, ensureChild, insertOrdered } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse } from '../failure.js';
import { DOMAIN_ORDER, MEMORY_BACKING_ORDER, MEMTUNE_ORDER } from '../domain/libvirt-order.js';
import { sizeKiB } from '../domain/units.js';
import type { Rule, RuleContext } from './types.js';

/**
 * QEMU's own pinned regions beside guest RAM: UEFI ROM 4096 KiB, UEFI var store
 * 4096 KiB, pc.rom 128 KiB, isa-bios 128 KiB, ACPI tables 2384 KiB = 10832 KiB,
 * rounded up to 16 MiB so at least 256 KiB of padding remain.
 */
export const QEMU_OVERHEAD_KIB = 16 * 1024;

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

/** Guest RAM (the hot-plug ceiling when there is one) + video memory + QEMU's regions, in KiB. */
export function pinnedKiB(domain: XmlElement): number {
  const memory = domain.first('memory');
  if (!memory) refuse('domain/memory', 'missing: cannot size the pinned memory');
  const max = domain.first('maxMemory');
  let ram = sizeKiB(memory);
  if (max) ram = Math.max(ram, sizeKiB(max));
  const video = (domain.first('devices')?.elements('video') ?? []).reduce((s, v) => s + videoKiB(v), 0);
  return ram + video + QEMU_OVERHEAD_KIB;
}

function ensureLocked(ctx: RuleContext): void {
  const backing = ensureChild(ctx.domain, 'memoryBacking', DOMAIN_ORDER);
  if (backing.first('locked')) return;
  insertOrdered(backing, createElement('locked'), MEMORY_BACKING_ORDER);
  ctx.change('added <memoryBacking><locked/>: SEV pages must stay in RAM (protect the host with a machine.slice limit)');
}

export const memoryPinning: Rule = {
  name: 'memory-pinning',
  description: 'pins guest memory with a memtune hard_limit (or memoryBacking locked)',
  apply(ctx) {
    const { domain } = ctx;
    const alreadyLocked = domain.first('memoryBacking')?.first('locked') !== undefined;
    if (ctx.options.memoryPinning === 'locked' || (alreadyLocked && ctx.options.memoryPinning === undefined)) {
      ensureLocked(ctx);
      return;
    }
    const needed = pinnedKiB(domain);
    const memtune = domain.first('memtune');
    const hard = memtune?.first('hard_limit');
    if (hard && sizeKiB(hard) >= needed) return;
    if (hard) {
      const old = `${hard.text().trim()} ${hard.attr('unit') ?? 'KiB'}`;
      hard.setAttr('unit', 'KiB');
      hard.setText(String(needed));
      ctx.change(`raised <memtune><hard_limit> from ${old} to ${needed} KiB: below guest RAM + video + 16 MiB the guest is killed`);
    } else {
      const tune = memtune ?? ensureChild(domain, 'memtune', DOMAIN_ORDER);
      insertOrdered(tune, createElement('hard_limit', [['unit', 'KiB']], String(needed)), MEMTUNE_ORDER);
      ctx.change(`added <memtune><hard_limit unit='KiB'>${needed}</hard_limit>: SEV pages are pinned; guest RAM + video + 16 MiB for QEMU's ROMs and ACPI tables`);
    }
    // libvirt refuses a hard_limit above swap_hard_limit.
    const swap = domain.first('memtune')?.first('swap_hard_limit');
    if (swap && sizeKiB(swap) < needed) {
      const old = `${swap.text().trim()} ${swap.attr('unit') ?? 'KiB'}`;
      swap.setAttr('unit', 'KiB');
      swap.setText(String(needed));
      ctx.change(`raised <memtune><swap_hard_limit> from ${old} to ${needed} KiB: libvirt requires it to be at least hard_limit`);
    }
  },
};
