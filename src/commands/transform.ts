import type { Argv } from 'yargs';
import { createTwoFilesPatch } from 'diff';
import { FailureError } from '../failure.js';
import { transformDomain } from '../transform.js';
import { hostFacts } from '../host/facts.js';
import { defaultFirmwareDirs } from '../host/firmware.js';
import type { MemoryPinning, TransformOptions } from '../rules/types.js';
import type { Io } from '../io.js';
import { readInput } from './input.js';
import type { CommandSpec } from './types.js';

/** Options every command that reads host facts shares. */
export function hostOptions(y: Argv): Argv {
  return y
    .option('domcaps', {
      type: 'string',
      describe: 'host domain capabilities XML (default: run `virsh domcapabilities --arch x86_64 --machine q35`)',
    })
    .option('firmware-dirs', {
      type: 'string',
      describe: "comma-separated firmware descriptor folders (default: QEMU's: /usr/share/qemu/firmware, /etc/qemu/firmware, ~/.config/qemu/firmware)",
    });
}

export function firmwareDirsFrom(io: Io, value: unknown): string[] {
  return typeof value === 'string' && value !== '' ? value.split(',').filter(Boolean) : defaultFirmwareDirs(io.env['HOME']);
}

export function transformOptionsFrom(args: Record<string, unknown>): TransformOptions {
  const firmware = String(args['firmware'] ?? 'auto');
  if (firmware !== 'auto' && !firmware.startsWith('/'))
    throw new FailureError({ kind: 'usage', message: `--firmware must be 'auto' or an absolute path, not '${firmware}'` });
  return {
    policy: args['policy'] as string | undefined,
    memoryPinning: args['memory-pinning'] as MemoryPinning | undefined,
    firmware,
  };
}

export const transformCommand: CommandSpec = {
  command: ['$0 [file]', 'transform [file]'],
  describe: 'convert a domain XML (FILE or stdin) to an SEV guest; untagged domains pass through unchanged',
  builder: (y) =>
    hostOptions(y)
      .positional('file', { type: 'string', describe: 'domain XML file (default: stdin)' })
      .option('policy', { type: 'string', describe: 'SEV policy in hex, e.g. 0x0033 (SEV) or 0x0037 (SEV-ES)' })
      .option('memory-pinning', {
        type: 'string',
        choices: ['hard-limit', 'locked'],
        describe: 'pin memory with <memtune><hard_limit> or with <memoryBacking><locked/>',
      })
      .option('firmware', {
        type: 'string',
        default: 'auto',
        describe: "'auto' (<os firmware='efi'>, libvirt picks an amd-sev firmware) or the path of an OVMF code file",
      })
      .option('all', { type: 'boolean', default: false, describe: 'convert untagged domains too' })
      .option('diff', { type: 'boolean', default: false, describe: 'print a unified diff instead of the XML' })
      .option('explain', { type: 'boolean', default: false, describe: 'one stderr line per change, and why' })
      .example('virsh dumpxml --inactive VM | $0 | virsh define /dev/stdin', 'convert a tagged domain in place')
      .example('$0 --domcaps caps.xml --diff in.xml', 'show what would change'),
  async run(io, args) {
    const file = args['file'] as string | undefined;
    const input = await readInput(io, file);
    const options = transformOptionsFrom(args);
    const host = hostFacts({
      domcaps: args['domcaps'] as string | undefined,
      firmwareDirs: firmwareDirsFrom(io, args['firmware-dirs']),
      run: io.run,
    });
    const result = transformDomain(input, options, host, { all: args['all'] === true });
    if (args['explain'] === true) {
      if (!result.converted) io.stderr('sev-xform: not tagged: left unchanged (use --all to convert anyway)\n');
      else if (result.changes.length === 0) io.stderr('sev-xform: already a correct SEV guest: nothing to change\n');
      for (const c of result.changes) io.stderr(`sev-xform: ${c.rule}: ${c.message}\n`);
    }
    for (const w of result.warnings) io.stderr(`sev-xform: warning: ${w}\n`);
    if (args['diff'] === true) {
      const name = file && file !== '-' ? file : 'domain.xml';
      if (result.output !== input) io.stdout(createTwoFilesPatch(`a/${name}`, `b/${name}`, input, result.output, '', '', { context: 3 }));
    } else io.stdout(result.output);
    return 0;
  },
};
