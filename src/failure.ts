// Every way sev-xform can fail, as data; one function turns it into the single
// stderr line an operator sees, another into the exit code.

import type { Io } from './io.js';

export type Failure =
  /** The command line is wrong (exit 2). */
  | { kind: 'usage'; message: string }
  /** The input is not a domain XML we accept. */
  | { kind: 'bad-input'; message: string }
  /** The domain cannot be made a correct SEV guest, or may not do what was asked. */
  | { kind: 'refused'; element: string; reason: string }
  /** The host cannot run what was asked, or its facts cannot be read. */
  | { kind: 'host'; message: string }
  /** A file or command we depend on failed. */
  | { kind: 'io'; what: string; message: string };

export class FailureError extends Error {
  constructor(readonly failure: Failure) {
    super(renderFailure(failure));
  }
}

export function fail(failure: Failure): never {
  throw new FailureError(failure);
}

/** Refuses with a message naming the element at fault. */
export function refuse(element: string, reason: string): never {
  throw new FailureError({ kind: 'refused', element, reason });
}

export function renderFailure(f: Failure): string {
  switch (f.kind) {
    case 'usage':
      return `sev-xform: ${f.message}`;
    case 'bad-input':
      return `sev-xform: bad input: ${f.message}`;
    case 'refused':
      return `sev-xform: refused: ${f.element}: ${f.reason}`;
    case 'host':
      return `sev-xform: host: ${f.message}`;
    case 'io':
      return `sev-xform: ${f.what}: ${f.message}`;
  }
}

export function exitCodeOf(f: Failure): 1 | 2 {
  return f.kind === 'usage' ? 2 : 1;
}

/** A command's exit code; a thrown failure becomes its one stderr line and exit code. */
export async function exitCodeFrom(code: Promise<number>, io: Pick<Io, 'stderr'>): Promise<number> {
  try {
    return await code;
  } catch (e: unknown) {
    if (e instanceof FailureError) {
      io.stderr(renderFailure(e.failure) + '\n');
      return exitCodeOf(e.failure);
    }
    io.stderr(renderFailure({ kind: 'io', what: 'internal error', message: e instanceof Error ? e.message : String(e) }) + '\n');
    return 1;
  }
}
