// Whole-process measurements: wall time of one run (spawn to exit, as the caller of a hook or filter
// waits for it), a checked run that proves the command does what it is measured for, and peak RSS.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A measured command. `stdin` is a file fed on standard input (libvirt and pipes hand the domain
 * that way); `check(stdout, stderr)` returns a problem or undefined, and `status` is the expected
 * exit code: a command that fails early would otherwise look fast.
 */
/** @typedef {{ id: string, label: string, cmd: string, args: string[], stdin?: string, env: Record<string, string>, status?: number, check?: (stdout: string, stderr: string) => string | undefined }} Case */

function stdinOf(c) {
  return c.stdin ? openSync(c.stdin, 'r') : 'ignore';
}

/** One run; resolves to milliseconds from spawn to exit. Output goes to /dev/null, as unread output costs nothing. */
export function timeOnce(c) {
  return new Promise((resolve, reject) => {
    const input = stdinOf(c);
    const start = process.hrtime.bigint();
    const child = spawn(c.cmd, c.args, { stdio: [input, 'ignore', 'ignore'], env: c.env });
    child.on('error', (e) => {
      if (typeof input === 'number') closeSync(input);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (typeof input === 'number') closeSync(input);
      if (code !== (c.status ?? 0)) reject(new Error(`${c.id}: exit ${code ?? signal} during timing (expected ${c.status ?? 0})`));
      else resolve(ms);
    });
  });
}

/** Runs `c` once with its output captured; returns a problem description, or undefined when it behaved. */
export function verify(c) {
  const input = stdinOf(c);
  try {
    const r = spawnSync(c.cmd, c.args, { stdio: [input, 'pipe', 'pipe'], env: c.env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
    if (r.error) return r.error.message;
    if (r.status !== (c.status ?? 0)) return `exit ${r.status ?? r.signal} (expected ${c.status ?? 0}): ${firstLine(r.stderr)}`;
    return c.check?.(r.stdout, r.stderr);
  } finally {
    if (typeof input === 'number') closeSync(input);
  }
}

function firstLine(text) {
  return (text ?? '').split('\n').find((l) => l.trim() !== '') ?? '(no stderr)';
}

/**
 * Peak resident set size in KiB, from GNU time's %M (the kernel's ru_maxrss of the child, taken at
 * wait4): /proc/PID/status VmHWM cannot be read once a short-lived process has exited.
 */
export function peakRssKiB(c, timeBin, tmp) {
  const out = join(tmp, `rss-${c.id}.txt`);
  const input = stdinOf(c);
  try {
    const r = spawnSync(timeBin, ['-f', '%M', '-o', out, c.cmd, ...c.args], { stdio: [input, 'ignore', 'ignore'], env: c.env });
    if (r.error || r.status !== (c.status ?? 0)) return undefined;
    const kib = Number(readFileSync(out, 'utf8').trim().split('\n').pop());
    return Number.isFinite(kib) ? kib : undefined;
  } finally {
    if (typeof input === 'number') closeSync(input);
    rmSync(out, { force: true });
  }
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))];
}

/** Least-squares line through (x, y); r2 says how well a straight line explains the points. */
export function linearFit(points) {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const syy = points.reduce((s, p) => s + (p.y - my) ** 2, 0);
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}
