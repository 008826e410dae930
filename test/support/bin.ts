// Runs the built program, dist/sev-xform, as users do.
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';

export const BIN = resolve('dist/sev-xform');

export interface BinRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runBin(args: readonly string[], opts: { input?: string | Buffer; env?: Record<string, string>; path?: string } = {}): BinRun {
  // Node's own folder stays on PATH so a plain launcher build also runs; the single binary needs none.
  const path = opts.path !== undefined ? `${opts.path}:${dirname(process.execPath)}` : process.env['PATH'] ?? '';
  const r = spawnSync(BIN, args, {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: { PATH: path, HOME: '/nonexistent', LC_ALL: 'C', ...opts.env },
    maxBuffer: 256 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
