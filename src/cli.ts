// The command line. `buildParser` is exported so tests drive it with argv
// arrays; it never touches `process` (bin.ts does, through `Io`).

import yargs, { type Argv } from 'yargs';
import { FailureError, exitCodeOf, renderFailure } from './failure.js';
import { COMMANDS } from './commands/index.js';
import { runHook } from './hook/run.js';
import { plainFilterArgs, transformCommand } from './commands/transform.js';
import type { Io } from './io.js';

export type { Io };

/** Positionals declared variadic (`<vm..>`, `[files..]`): the only values that may be arrays. */
const VARIADIC = new Set(
  COMMANDS.flatMap((c) => [c.command].flat()).flatMap((cmd) => [...cmd.matchAll(/[<[]([\w-]+)\.\.[>\]]/g)].map((m) => m[1]!)),
);

/** Names of the sub-commands other than the filter: their arguments always go through yargs. */
const SUBCOMMANDS = new Set(
  COMMANDS.filter((c) => c !== transformCommand).map((c) => String([c.command].flat()[0]).split(' ')[0]!),
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
      done.code.catch(() => undefined); // awaited in main()
    });
  }
  return y.middleware(lastValueWins).strict().help().version(false).wrap(null);
}

/**
 * libvirt's own call, `hook DOMAIN OPERATION SUB-OPERATION EXTRA` without options, as runHook's
 * arguments; undefined for anything else (--help, options, other counts), which yargs handles.
 * libvirt runs the hook on every lifecycle event of every domain, and building and running the
 * yargs parser cost each call 5-14 ms.
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
  const filterArgs = SUBCOMMANDS.has(argv[0] ?? '') ? undefined : plainFilterArgs(argv);
  if (filterArgs !== undefined) return exitCodeFrom(transformCommand.run(io, filterArgs), io);
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

/** A command's exit code; a thrown failure becomes its one stderr line and exit code. */
async function exitCodeFrom(code: Promise<number>, io: Io): Promise<number> {
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
