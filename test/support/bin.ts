// Runs the built program, dist/sev-xform, as users do.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

export const BIN = resolve('dist/sev-xform');

export interface BinRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runBin(args: readonly string[], opts: { input?: string | Buffer; env?: Record<string, string>; path?: string } = {}): BinRun {
  // The single binary needs no Node on PATH; /usr/bin and /bin are there for fake tools' own commands.
  const path = opts.path !== undefined ? `${opts.path}:/usr/bin:/bin` : process.env["PATH"] ?? "";
  const r = spawnSync(BIN, args, {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: { PATH: path, HOME: '/nonexistent', LC_ALL: 'C', ...opts.env },
    maxBuffer: 256 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
