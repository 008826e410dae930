import type { Argv } from 'yargs';
import { createTwoFilesPatch } from 'diff';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { FailureError, renderFailure } from '../failure.js';
import { transformDomain } from '../transform.js';
import { hostFacts } from '../host/facts.js';
import { defaultFirmwareDirs } from '../host/firmware.js';
import type { HostFacts, MemoryPinning, TransformOptions } from '../rules/types.js';
import { DEFAULT_QEMU_OVERHEAD_MIB } from '../domain/memory.js';
import { parseOverheadSize } from '../domain/units.js';
import type { Io } from '../io.js';
import { readInput } from './input.js';
import type { CommandSpec } from './types.js';

/** One option: what yargs is told, and what the filter's fast path accepts. */
interface Flag {
  type: 'string' | 'boolean';
  describe: string;
  choices?: readonly string[];
  default?: string | boolean;
}

/** Options every command that reads host facts shares. */
const HOST_FLAGS: Record<string, Flag> = {
  domcaps: {
    type: 'string',
    describe: 'host domain capabilities XML (default: run `virsh domcapabilities --arch x86_64 --machine q35`)',
  },
  'firmware-dirs': {
    type: 'string',
    describe: "comma-separated firmware descriptor folders (default: QEMU's: /usr/share/qemu/firmware, /etc/qemu/firmware, ~/.config/qemu/firmware)",
  },
};

/** The options that shape a conversion, shared by the filter and `apply`. */
const CONVERSION_FLAGS: Record<string, Flag> = {
  policy: { type: 'string', describe: 'SEV policy in hex, e.g. 0x0033 (SEV) or 0x0037 (SEV-ES)' },
  'memory-pinning': {
    type: 'string',
    choices: ['hard-limit', 'locked'],
    describe: 'pin memory with <memtune><hard_limit> or with <memoryBacking><locked/>',
  },
  firmware: {
    type: 'string',
    default: 'auto',
    describe: "'auto' (<os firmware='efi'>, libvirt picks an amd-sev firmware) or the path of an OVMF code file",
  },
  'qemu-overhead': {
    type: 'string',
    describe: `QEMU's own memory above what SEV pins, added to the hard_limit, with a unit, e.g. 512MiB (default ${DEFAULT_QEMU_OVERHEAD_MIB}MiB; set the hook's qemu_overhead_mib to match)`,
  },
  all: { type: 'boolean', default: false, describe: 'convert untagged domains too' },
};

/** The filter's own options. */
const FILTER_FLAGS: Record<string, Flag> = {
  'output-dir': { type: 'string', describe: 'write each FILE converted to DIR/<its name> (batch mode: one process for many domains)' },
  diff: { type: 'boolean', default: false, describe: 'print a unified diff instead of the XML' },
  explain: { type: 'boolean', default: false, describe: 'one stderr line per change, and why' },
};

function addFlags(y: Argv, flags: Record<string, Flag>): Argv {
  for (const [name, f] of Object.entries(flags)) y = y.option(name, { ...f, choices: f.choices ? [...f.choices] : undefined });
  return y;
}

export const hostOptions = (y: Argv): Argv => addFlags(y, HOST_FLAGS);
export const conversionOptions = (y: Argv): Argv => addFlags(y, CONVERSION_FLAGS);

/**
 * The filter's arguments without yargs, for the plain form every pipeline
 * uses (`--flag value`, boolean `--flag`, files); undefined for anything else
 * (help, `--flag=value`, an unknown or misspelt flag, a value outside its
 * choices), which yargs then parses and explains. Building and running the
 * yargs parser costs each run about 10 ms, and the filter sits in pipelines
 * and in libvirt tooling that runs it per domain.
 */
export function plainFilterArgs(argv: readonly string[]): Record<string, unknown> | undefined {
  const flags = { ...HOST_FLAGS, ...CONVERSION_FLAGS, ...FILTER_FLAGS };
  const args: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(flags)) if (f.default !== undefined) args[name] = f.default;
  const files: string[] = [];
  let i = argv[0] === 'transform' ? 1 : 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-' || !a.startsWith('-')) {
      files.push(a);
      continue;
    }
    const f = flags[a.slice(2)];
    if (!a.startsWith('--') || !f) return undefined;
    if (f.type === 'boolean') {
      args[a.slice(2)] = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined || value.startsWith('-') || (f.choices && !f.choices.includes(value))) return undefined;
    args[a.slice(2)] = value;
  }
  args['files'] = files;
  return args;
}

export function firmwareDirsFrom(io: Io, value: unknown): string[] {
  return typeof value === 'string' && value !== '' ? value.split(',').filter(Boolean) : defaultFirmwareDirs(io.env['HOME']);
}

export function transformOptionsFrom(args: Record<string, unknown>): TransformOptions {
  const firmware = String(args['firmware'] ?? 'auto');
  if (firmware !== 'auto' && !firmware.startsWith('/'))
    throw new FailureError({ kind: 'usage', message: `--firmware must be 'auto' or an absolute path, not '${firmware}'` });
  const overhead = args['qemu-overhead'];
  return {
    policy: args['policy'] as string | undefined,
    memoryPinning: args['memory-pinning'] as MemoryPinning | undefined,
    firmware,
    ...(typeof overhead === 'string' ? { qemuOverheadKiB: parseOverheadSize(overhead, '--qemu-overhead') } : {}),
  };
}

async function convertOne(
  io: Io,
  args: Record<string, unknown>,
  file: string | undefined,
  options: TransformOptions,
  host: HostFacts,
  emit: (text: string) => void,
  label?: string,
): Promise<void> {
  const input = await readInput(io, file);
  const result = transformDomain(input, options, host, { all: args['all'] === true, what: file && file !== '-' ? file : 'stdin' });
  if (args['explain'] === true) {
    const where = label ? `${label}: ` : '';
    if (!result.converted) io.stderr(`sev-xform: ${where}not tagged: left unchanged (use --all to convert anyway)\n`);
    else if (result.changes.length === 0) io.stderr(`sev-xform: ${where}already a correct SEV guest: nothing to change\n`);
    for (const c of result.changes) io.stderr(`sev-xform: ${where}${c.rule}: ${c.message}\n`);
  }
  for (const w of result.warnings) io.stderr(`sev-xform: warning: ${label ? `${label}: ` : ''}${w}\n`);
  if (args['diff'] === true) {
    const name = file && file !== '-' ? file : 'domain.xml';
    if (result.output !== input) emit(createTwoFilesPatch(`a/${name}`, `b/${name}`, input, result.output, '', '', { context: 3 }));
  } else emit(result.output);
}

export const transformCommand: CommandSpec = {
  command: ['$0 [files..]', 'transform [files..]'],
  describe: 'convert a domain XML (FILE or stdin) to an SEV guest; untagged domains pass through unchanged',
  builder: (y) =>
    addFlags(conversionOptions(hostOptions(y)), FILTER_FLAGS)
      .positional('files', { type: 'string', array: true, describe: "domain XML file(s) (default: stdin; '-' is stdin)" })
      .example('virsh dumpxml --inactive VM | $0 | virsh define /dev/stdin', 'convert a tagged domain in place')
      .example('$0 --domcaps caps.xml --diff in.xml', 'show what would change')
      .example('$0 --domcaps caps.xml --output-dir out/ domains/*.xml', 'convert many domains in one process'),
  async run(io, args) {
    const files = (args['files'] as string[] | undefined) ?? [];
    const outputDir = args['output-dir'] as string | undefined;
    if (files.length > 1 && outputDir === undefined && args['diff'] !== true)
      throw new FailureError({ kind: 'usage', message: 'several FILEs need --output-dir DIR (or --diff)' });
    const options = transformOptionsFrom(args);
    const host = hostFacts({
      domcaps: args['domcaps'] as string | undefined,
      firmwareDirs: firmwareDirsFrom(io, args['firmware-dirs']),
      run: io.run,
    });
    if (files.length <= 1 && outputDir === undefined) {
      await convertOne(io, args, files[0], options, host, (text) => io.stdout(text));
      return 0;
    }
    // Batch: one process for many domains; a failure is reported per file and the rest go on.
    if (outputDir !== undefined) mkdirSync(outputDir, { recursive: true });
    let failures = 0;
    for (const file of files) {
      try {
        await convertOne(io, args, file, options, host, (text) => {
          if (outputDir === undefined) io.stdout(text);
          else writeFileSync(join(outputDir, basename(file)), text);
        }, file);
      } catch (e: unknown) {
        if (!(e instanceof FailureError) || e.failure.kind === 'usage') throw e;
        failures++;
        io.stderr(`${renderFailure(e.failure)} (${file})\n`);
      }
    }
    return failures > 0 ? 1 : 0;
  },
};
