// The only file that touches `process`: wires stdin/stdout/stderr, the
// environment and child processes into the CLI, and sets the exit code.

import { existsSync, readSync, writeSync } from 'node:fs';
import { main } from './cli.js';
import { readFileBounded, readStreamBounded } from './read-bounded.js';
import { MAX_INPUT_BYTES } from './xml/read.js';
import type { Io } from './io.js';

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

/**
 * Stdin up to the input limit plus one byte (one byte over tells the reader it is too large; an
 * endless stdin is never held whole), read with read(2): process.stdin would first build a stream
 * and load the stream and socket modules, a few milliseconds on every hook call. A non-blocking
 * stdin with no data yet (EAGAIN) is read on through process.stdin, which waits for it.
 */
async function readStdin(): Promise<Uint8Array> {
  // A domain fits the first 64 KiB buffer; only larger input takes one buffer of the cap
  // (whose unwritten pages cost no memory), so the peak is the data once, never chunks plus a copy.
  let buffer = Buffer.allocUnsafe(64 * 1024);
  let size = 0;
  while (size <= MAX_INPUT_BYTES) {
    if (size === buffer.length) {
      const bigger = Buffer.allocUnsafe(MAX_INPUT_BYTES + 1);
      buffer.copy(bigger, 0, 0, size);
      buffer = bigger;
    }
    let n: number;
    try {
      n = readSync(0, buffer, size, buffer.length - size, null);
    } catch (e: unknown) {
      if (errnoOf(e) !== 'EAGAIN') throw e;
      const rest = await readStreamBounded(process.stdin, MAX_INPUT_BYTES - size);
      return Buffer.concat([buffer.subarray(0, size), rest]);
    }
    if (n === 0) break;
    size += n;
  }
  return buffer.subarray(0, size);
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
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

/** The rest of stdin after readStdin's cap, 1 MiB at a time into one reused buffer (see Io.readStdinRest). */
async function* readStdinRest(): AsyncIterable<Uint8Array> {
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buffer, 0, buffer.length, null);
    } catch (e: unknown) {
      if (errnoOf(e) !== 'EAGAIN') throw e;
      for await (const chunk of process.stdin) yield chunk as Buffer;
      return;
    }
    if (n === 0) return;
    yield buffer.subarray(0, n);
  }
}

/**
 * Node has no flock(2): util-linux's flock(1) locks the descriptor it inherits as fd 3, which is
 * this process's open file, so the lock outlives the child and ends when this process closes the
 * file or dies. Absolute paths: the hook's PATH is whatever libvirtd's is.
 */
function lockExclusive(fd: number, waitSeconds: number): string | undefined {
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const flock = ['/usr/bin/flock', '/bin/flock'].find((p) => existsSync(p));
  if (flock === undefined) return 'flock(1) from util-linux is not installed (/usr/bin/flock)';
  const r = spawnSync(flock, ['--exclusive', '--wait', String(waitSeconds), '--conflict-exit-code', '75', '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
  });
  if (r.error) return `${flock}: ${r.error.message}`;
  if (r.status === 75) return `another prepare held it for ${waitSeconds} s`;
  if (r.status !== 0) return `${flock} exited ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n')[0] ?? ''}`;
  return undefined;
}

function processIo(): Io {
  return {
    readStdin,
    readFile: (path) => readFileBounded(path, MAX_INPUT_BYTES),
    stdout: (text) => writeAll(1, text),
    stderr: (text) => writeAll(2, text),
    env: process.env,
    readStdinRest,
    lockExclusive,
    run: (cmd, args) => {
      // Loaded on first use: only virsh needs it, and every hook call would pay for loading it.
      const { spawnSync } = process.getBuiltinModule('node:child_process');
      const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error?.message };
    },
  };
}

/** Runs the program once; the single binary's loader (scripts/sea/loader.cjs) calls it. */
export function run(): void {
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
