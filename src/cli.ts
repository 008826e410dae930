// The command line. `buildParser` is exported so tests drive it with argv
// arrays; it never touches `process` (bin.ts does, through `Io`).

import yargs, { type Argv } from 'yargs';
import { FailureError, exitCodeOf, renderFailure } from './failure.js';
import { COMMANDS } from './commands/index.js';
import type { Io } from './io.js';

export type { Io };

/** Builds the parser; the chosen command's handler leaves its exit code in `done`. */
export function buildParser(io: Io, done: { code?: Promise<number> }): Argv {
  let y = yargs().scriptName('sev-xform').usage('$0 [FILE]: turn a tagged libvirt domain into an AMD SEV guest');
  for (const spec of COMMANDS) {
    y = y.command(spec.command as string | string[], spec.describe, spec.builder, (args) => {
      done.code = spec.run(io, args as Record<string, unknown>);
      done.code.catch(() => undefined); // awaited in main()
    });
  }
  // A repeated option takes its last value, as in most Unix tools, rather than becoming an array.
  return y.parserConfiguration({ 'duplicate-arguments-array': false }).strict().help().version(false).wrap(null);
}

/** Runs the command line and returns the exit code; every failure is one stderr line. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const done: { code?: Promise<number> } = {};
  let usageError: string | undefined;
  let helpText: string | undefined;
  try {
    await new Promise<void>((resolve) => {
      buildParser(io, done).parse([...argv], {}, (err, _args, output) => {
        if (err) usageError = err.message;
        else if (output) helpText = output;
        resolve();
      });
    });
  } catch (e: unknown) {
    usageError = e instanceof Error ? e.message : String(e);
  }
  if (usageError !== undefined) {
    io.stderr(`${renderFailure({ kind: 'usage', message: usageError.split('\n')[0] ?? usageError })} (see --help)\n`);
    return 2;
  }
  if (helpText !== undefined) {
    io.stdout(helpText + '\n');
    return 0;
  }
  try {
    return (await done.code) ?? 0;
  } catch (e: unknown) {
    if (e instanceof FailureError) {
      io.stderr(renderFailure(e.failure) + '\n');
      return exitCodeOf(e.failure);
    }
    io.stderr(renderFailure({ kind: 'io', what: 'internal error', message: e instanceof Error ? e.message : String(e) }) + '\n');
    return 1;
  }
}
