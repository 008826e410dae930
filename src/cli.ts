// The command line. It never touches `process` (bin.ts does, through `Io`). libvirt's hook call and
// plain filter runs are answered here directly; every other command line goes through yargs in
// cli-parser.ts, which is loaded only then: loading and building yargs cost every call 5-14 ms.

import { exitCodeFrom } from './failure.js';
import { runHook } from './hook/run.js';
import { SUBCOMMAND_NAMES } from './commands/names.js';
import { plainFilterArgs, transformCommand } from './commands/transform.js';
import type { Io } from './io.js';

export type { Io };

/**
 * libvirt's own call, `hook DOMAIN OPERATION SUB-OPERATION EXTRA` without options, as runHook's
 * arguments; undefined for anything else (--help, options, other counts), which yargs handles.
 */
export function libvirtHookArgs(argv: readonly string[]): string[] | undefined {
  if (argv[0] !== 'hook' || argv.length < 3 || argv.length > 5) return undefined;
  const args = argv.slice(1);
  return args.every((a) => a === '-' || !a.startsWith('-')) ? args : undefined;
}

/** Runs the command line and returns the exit code; every failure is one stderr line. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const hookArgs = libvirtHookArgs(argv);
  if (hookArgs !== undefined) return exitCodeFrom(runHook(hookArgs, io), io);
  const filterArgs = SUBCOMMAND_NAMES.has(argv[0] ?? '') ? undefined : plainFilterArgs(argv);
  if (filterArgs !== undefined) return exitCodeFrom(transformCommand.run(io, filterArgs), io);
  const { parseAndRun } = await import('./cli-parser.js');
  return parseAndRun(argv, io);
}
