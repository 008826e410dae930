import type { Argv } from 'yargs';
import type { Io } from '../io.js';

/** One sub-command: yargs' command, describe and builder, plus a runner that returns the exit code. */
export interface CommandSpec {
  command: string | readonly string[];
  describe: string;
  builder: (y: Argv) => Argv;
  run: (io: Io, args: Record<string, unknown>) => Promise<number>;
}
