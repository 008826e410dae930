import type { RunCommand } from './host/facts.js';

/** Everything a command may do to the outside world; bin.ts provides the real one. */
export interface Io {
  readStdin(): Promise<Uint8Array>;
  readFile(path: string): Uint8Array;
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  run: RunCommand;
  /**
   * The rest of stdin after readStdin stopped at its cap, in chunks (each valid until the next is
   * asked for), so that a marker past the limit is still seen in bounded memory. Without it, the
   * hook treats an over-limit input as SEV.
   */
  readStdinRest?(): AsyncIterable<Uint8Array>;
  /**
   * flock(2)s the open file `fd` exclusively, waiting at most `waitSeconds`; the lock stays with
   * this process's descriptor. Returns an error message, or undefined when locked. Without it, an
   * SEV prepare is refused.
   */
  lockExclusive?(fd: number, waitSeconds: number): string | undefined;
}
