// A memory cgroup for one QEMU process (and its helpers), as libvirt makes one
// per domain with <memtune><hard_limit> as its limit: the limit covers guest
// RAM and everything QEMU allocates besides. Works with cgroup v1 (memory
// controller at /sys/fs/cgroup/memory) and v2 (unified, memory controller on).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOT = '/sys/fs/cgroup';
/** teardown.sh removes leftover cgroups with this prefix. */
export const CGROUP_PREFIX = 'sevx-test-';

export interface MemoryCgroup {
  version: 1 | 2;
  path: string;
  /** The limit in bytes; undefined = unlimited. */
  limitBytes: number | undefined;
  /** File to write a pid into to move that process in. */
  procsFile: string;
  /** Highest memory use of the cgroup so far, in bytes. */
  peakBytes(): number;
  /** How many processes the kernel's OOM killer killed in the cgroup. */
  oomKills(): number;
  /** Pids still in the cgroup. */
  pids(): number[];
  /** Kills what is left in it, then removes it. */
  remove(): void;
}

export function memoryCgroupVersion(): 1 | 2 {
  if (existsSync(join(V1_ROOT, 'memory.limit_in_bytes'))) return 1;
  const controllers = join(V2_ROOT, 'cgroup.controllers');
  if (existsSync(controllers) && readFileSync(controllers, 'utf8').split(/\s+/).includes('memory')) return 2;
  throw new Error(`no memory cgroup controller: neither ${V1_ROOT}/memory.limit_in_bytes (v1) nor "memory" in ${controllers} (v2)`);
}

function readNumber(file: string): number {
  const text = readFileSync(file, 'utf8').trim();
  if (text === 'max') return Number.POSITIVE_INFINITY;
  const n = Number(text);
  if (!Number.isFinite(n)) throw new Error(`${file}: not a number: ${text}`);
  return n;
}

/** `key value` lines (memory.oom_control, memory.events, memory.stat). */
export function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k !== undefined && v !== undefined) out[k] = Number(v);
  }
  return out;
}

function killAndWait(pids: () => number[]): void {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of pids()) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    const until = Date.now() + 5000;
    while (pids().length > 0 && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    if (pids().length === 0) return;
  }
}

/**
 * Creates cgroup NAME (prefixed with sevx-test- and this process's pid, so two test runs on one
 * machine never take, or clean up, each other's cgroups) with the given limit, or none.
 * Swap is limited to zero as well where the kernel accounts it: SEV guest memory
 * is pinned and cannot be swapped, so nothing may escape the limit that way.
 */
export function createMemoryCgroup(name: string, limitBytes: number | undefined): MemoryCgroup {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`cgroup name ${JSON.stringify(name)}: only letters, digits, . _ -`);
  const version = memoryCgroupVersion();
  const root = version === 1 ? V1_ROOT : V2_ROOT;
  const path = join(root, `${CGROUP_PREFIX}${process.pid}-${name}`);
  if (existsSync(path)) removeCgroupDir(path, version);
  if (version === 2) {
    const subtree = join(V2_ROOT, 'cgroup.subtree_control');
    if (!readFileSync(subtree, 'utf8').split(/\s+/).includes('memory')) {
      try {
        writeFileSync(subtree, '+memory');
      } catch (e) {
        throw new Error(`cannot enable the memory controller for child cgroups (${subtree}): ${(e as Error).message}`);
      }
    }
  }
  mkdirSync(path);
  try {
    if (version === 1) {
      if (limitBytes !== undefined) {
        writeFileSync(join(path, 'memory.limit_in_bytes'), String(limitBytes));
        const memsw = join(path, 'memory.memsw.limit_in_bytes');
        if (existsSync(memsw)) writeFileSync(memsw, String(limitBytes));
      }
    } else {
      writeFileSync(join(path, 'memory.max'), limitBytes === undefined ? 'max' : String(limitBytes));
      const swap = join(path, 'memory.swap.max');
      if (existsSync(swap)) writeFileSync(swap, '0');
    }
  } catch (e) {
    rmdirSync(path);
    throw e;
  }
  const pids = (): number[] =>
    existsSync(path)
      ? readFileSync(join(path, 'cgroup.procs'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map(Number)
      : [];
  return {
    version,
    path,
    limitBytes,
    procsFile: join(path, 'cgroup.procs'),
    peakBytes: () => {
      if (version === 1) return readNumber(join(path, 'memory.max_usage_in_bytes'));
      const peak = join(path, 'memory.peak');
      // memory.peak exists since Linux 5.19; before that only the current use can be read.
      return readNumber(existsSync(peak) ? peak : join(path, 'memory.current'));
    },
    oomKills: () => (version === 1 ? readKeyed(join(path, 'memory.oom_control'))['oom_kill'] ?? 0 : readKeyed(join(path, 'memory.events'))['oom_kill'] ?? 0),
    pids,
    remove: () => {
      killAndWait(pids);
      removeCgroupDir(path, version);
    },
  };
}

function removeCgroupDir(path: string, version: 1 | 2): void {
  // A cgroup with children cannot go; none are made here, but be thorough.
  for (const entry of readdirSync(path, { withFileTypes: true })) if (entry.isDirectory()) removeCgroupDir(join(path, entry.name), version);
  const procs = readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  if (procs.length > 0) killAndWait(() => (existsSync(path) ? readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number) : []));
  rmdirSync(path);
}
