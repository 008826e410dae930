// The only file that touches `process`: wires stdin/stdout/stderr, the
// environment and child processes into the CLI, and sets the exit code.

import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { startupSnapshot } from 'node:v8';
import { main } from './cli.js';
import type { Io } from './io.js';

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// Built per run, never at module load: in the single binary, module load happens
// once at build time (V8 startup snapshot) and must not capture that machine's env or stdio.
function processIo(): Io {
  return {
    readStdin,
    readFile: (path) => readFileSync(path),
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    env: process.env,
    run: (cmd, args) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error?.message };
    },
  };
}

function run(): void {
  main(process.argv.slice(2), processIo()).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`sev-xform: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

// The single binary's snapshot holds the loaded modules; `run` starts each time it is executed.
if (startupSnapshot.isBuildingSnapshot()) startupSnapshot.setDeserializeMainFunction(run);
else run();
