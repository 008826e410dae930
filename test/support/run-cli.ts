// Drives the CLI in-process with argv arrays and captured streams.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { main } from '../../src/cli.js';
import type { Io } from '../../src/io.js';
import type { RunCommand } from '../../src/host/facts.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(
  argv: readonly string[],
  opts: { stdin?: string | Uint8Array; env?: Record<string, string>; run?: RunCommand } = {},
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: Io = {
    readStdin: async () => (typeof opts.stdin === 'string' ? Buffer.from(opts.stdin) : opts.stdin ?? new Uint8Array()),
    readFile: (p) => readFileSync(p),
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    env: opts.env ?? { HOME: '/nonexistent' },
    // The real lock, as bin.ts takes it: flock(1) on the inherited descriptor.
    lockExclusive: (fd, waitSeconds) => {
      const r = spawnSync('/usr/bin/flock', ['--exclusive', '--wait', String(waitSeconds), '3'], { stdio: ['ignore', 'ignore', 'pipe', fd] });
      return r.status === 0 ? undefined : `flock exited ${r.status}`;
    },
    run: opts.run ?? (() => ({ status: null, stdout: '', stderr: '', error: 'virsh is not available in unit tests' })),
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}
