// The full command line, through yargs: every sub-command, --help and usage errors. Tests drive it
// through cli.ts's main() with argv arrays. cli.ts loads this module only for command lines
// that are not libvirt's hook call or a plain filter run, so those never load or build yargs.

import yargs, { type Argv } from 'yargs';
import { exitCodeFrom, renderFailure } from './failure.js';
import { COMMANDS } from './commands/index.js';
import type { Io } from './io.js';

/** Positionals declared variadic (`<vm..>`, `[files..]`): the only values that may be arrays. */
const VARIADIC = new Set(
  COMMANDS.flatMap((c) => [c.command].flat()).flatMap((cmd) => [...cmd.matchAll(/[<[]([\w-]+)\.\.[>\]]/g)].map((m) => m[1]!)),
);

/** A repeated option takes its last value, as in most Unix tools, instead of becoming an array. */
function lastValueWins(argv: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(argv)) {
    if (key !== '_' && !VARIADIC.has(key) && Array.isArray(value)) argv[key] = value[value.length - 1];
  }
}

/** Builds the parser; the chosen command's handler leaves its exit code in `done`. */
export function buildParser(io: Io, done: { code?: Promise<number> }): Argv {
  let y = yargs().scriptName('sev-xform').usage('$0 [FILE]: turn a tagged libvirt domain into an AMD SEV guest');
  for (const spec of COMMANDS) {
    y = y.command(spec.command as string | string[], spec.describe, spec.builder, (args) => {
      done.code = spec.run(io, args as Record<string, unknown>);
      done.code.catch(() => undefined); // awaited in parseAndRun()
    });
  }
  return y.middleware(lastValueWins).strict().help().version(false).wrap(null);
}

/** Runs any command line through yargs and returns the exit code; every failure is one stderr line. */
export async function parseAndRun(argv: readonly string[], io: Io): Promise<number> {
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
  return done.code ? exitCodeFrom(done.code, io) : 0;
}
