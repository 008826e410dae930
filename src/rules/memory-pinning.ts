import { createElement, ensureChild, insertOrdered } from '../xml/edit.js';
import { DOMAIN_ORDER, MEMORY_BACKING_ORDER, MEMTUNE_ORDER } from '../domain/libvirt-order.js';
import { mib, sizeKiB } from '../domain/units.js';
import { DEFAULT_QEMU_OVERHEAD_KIB, memoryBudget, type MemoryBudget } from '../domain/memory.js';
import type { Rule, RuleContext } from './types.js';

function ensureLocked(ctx: RuleContext): void {
  const backing = ensureChild(ctx.domain, 'memoryBacking', DOMAIN_ORDER);
  if (backing.first('locked')) return;
  insertOrdered(backing, createElement('locked'), MEMORY_BACKING_ORDER);
  ctx.change('added <memoryBacking><locked/>: SEV pages must stay in RAM (protect the host with a machine.slice limit)');
}

/** "4096 MiB RAM + 16 MiB ROM/ACPI = 4112 MiB pinned by SEV, + 256 MiB QEMU process + 16 MiB page tables (RAM/256) = ...". */
function breakdown(b: MemoryBudget): string {
  const video = b.videoKiB > 0 ? ` + ${mib(b.videoKiB)} video` : '';
  return `${mib(b.ramKiB)} RAM${video} + ${mib(b.romKiB)} ROM/ACPI = ${mib(b.pinnedKiB)} pinned by SEV, + ${mib(b.fixedOverheadKiB)} for the QEMU process itself + ${mib(b.pageTablesKiB)} for QEMU's and KVM's page tables (RAM/256) = ${mib(b.ceilingKiB)} process ceiling`;
}

export const memoryPinning: Rule = {
  name: 'memory-pinning',
  description: 'pins guest memory with a memtune hard_limit (or memoryBacking locked)',
  apply(ctx) {
    const { domain } = ctx;
    const alreadyLocked = domain.first('memoryBacking')?.first('locked') !== undefined;
    const locked = ctx.options.memoryPinning === 'locked' || (alreadyLocked && ctx.options.memoryPinning === undefined);
    if (locked) ensureLocked(ctx);
    // hard_limit is the memory cgroup limit of the whole QEMU process: SEV pins
    // RAM, video and ROMs at launch, and QEMU itself must fit beside them.
    const budget = memoryBudget(domain, ctx.options.qemuOverheadKiB ?? DEFAULT_QEMU_OVERHEAD_KIB);
    const needed = budget.ceilingKiB;
    const memtune = domain.first('memtune');
    const hard = memtune?.first('hard_limit');
    if (hard && sizeKiB(hard) >= needed) return;
    if (hard) {
      const old = `${hard.text().trim()} ${hard.attr('unit') ?? 'KiB'}`;
      hard.setAttr('unit', 'KiB');
      hard.setText(String(needed));
      // With <locked/> libvirt still applies an existing hard_limit as the
      // cgroup limit (and RLIMIT_MEMLOCK), so a small one kills QEMU just the same.
      const why = locked ? ' (with <locked/> libvirt still applies it as the cgroup and memlock limit)' : '';
      ctx.change(`raised <memtune><hard_limit> from ${old} to ${needed} KiB: it limits the whole QEMU process${why}, ${breakdown(budget)}; below that QEMU is killed`);
    } else if (!locked) {
      // Locked mode adds no hard_limit (libvirt sets memlock to unlimited);
      // adding one is what the hard_limit mode does.
      const tune = memtune ?? ensureChild(domain, 'memtune', DOMAIN_ORDER);
      insertOrdered(tune, createElement('hard_limit', [['unit', 'KiB']], String(needed)), MEMTUNE_ORDER);
      ctx.change(`added <memtune><hard_limit unit='KiB'>${needed}</hard_limit>: SEV pins guest memory and the limit covers the whole QEMU process: ${breakdown(budget)}`);
    }
    // libvirt refuses a hard_limit above swap_hard_limit, and a small
    // swap_hard_limit alone is a cgroup limit that kills QEMU too.
    const swap = domain.first('memtune')?.first('swap_hard_limit');
    if (swap && sizeKiB(swap) < needed) {
      const old = `${swap.text().trim()} ${swap.attr('unit') ?? 'KiB'}`;
      swap.setAttr('unit', 'KiB');
      swap.setText(String(needed));
      ctx.change(`raised <memtune><swap_hard_limit> from ${old} to ${needed} KiB: libvirt requires it to be at least hard_limit`);
    }
  },
};
