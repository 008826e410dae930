import type { RunCommand } from './host/facts.js';

/** Everything a command may do to the outside world; bin.ts provides the real one. */
export interface Io {
  readStdin(): Promise<Uint8Array>;
  readFile(path: string): Uint8Array;
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  run: RunCommand;
}
