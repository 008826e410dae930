// The only file that touches `process`: wires stdin/stdout/stderr, the
// environment and child processes into the CLI, and sets the exit code.

import { readFileSync, readSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { startupSnapshot } from 'node:v8';
import { main } from './cli.js';
import type { Io } from './io.js';

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

/**
 * All of stdin, read with read(2): process.stdin would first build a stream (and load the stream
 * and socket modules), a few milliseconds on every hook call. A non-blocking stdin that has no data
 * yet (EAGAIN) is read on through process.stdin, which waits for it.
 */
async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  const buffer = Buffer.allocUnsafe(64 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buffer, 0, buffer.length, null);
    } catch (e: unknown) {
      if (errnoOf(e) !== 'EAGAIN') throw e;
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      break;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/**
 * Writes all of `text` with write(2), for the same reason as readStdin; a full non-blocking pipe
 * (EAGAIN) is retried after 1 ms, so the output is complete and in order when the process exits.
 */
function writeAll(fd: number, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  let written = 0;
  while (written < bytes.length) {
    try {
      written += writeSync(fd, bytes, written, bytes.length - written);
    } catch (e: unknown) {
      if (errnoOf(e) !== 'EAGAIN') throw e;
      // Created here: the snapshot builder has no SharedArrayBuffer.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

// Built per run, never at module load: in the single binary, module load happens
// once at build time (V8 startup snapshot) and must not capture that machine's env or stdio.
function processIo(): Io {
  return {
    readStdin,
    readFile: (path) => readFileSync(path),
    stdout: (text) => writeAll(1, text),
    stderr: (text) => writeAll(2, text),
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
