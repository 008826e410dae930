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
 * libvirt's own call, `hook DOMAIN OPERATION SUB-OPERATION EXTRA`: exactly four arguments after
 * `hook`, always taken verbatim as runHook's arguments, whatever they look like. libvirt accepts
 * almost any domain name (`--help`, `--domain=x`, `-`, ''), so they are data and never options:
 * a name parsed as an option once printed help and let a tagged domain start. Any other count
 * (`hook --help`, a person's `hook VM prepare`) goes to yargs.
 */
export function libvirtHookArgs(argv: readonly string[]): string[] | undefined {
  return argv[0] === 'hook' && argv.length === 5 ? argv.slice(1) : undefined;
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
