import { CHECK_OPTIONS, checkDomain } from '../check.js';
import { DEFAULT_QEMU_OVERHEAD_MIB } from '../domain/memory.js';
import { parseOverheadSize } from '../domain/units.js';
import { readHookConfig } from '../hook/config.js';
import { hookPaths } from '../hook/run.js';
import { hostFacts } from '../host/facts.js';
import { CACHE_FILE, DEFAULT_STATE_DIR, hostFactsFromCache, readHostCache, stateDirOf } from '../host/cache.js';
import type { HostFacts } from '../rules/types.js';
import type { Io } from '../io.js';
import { readInput } from './input.js';
import { firmwareDirsFrom, hostOptions } from './transform.js';
import type { CommandSpec } from './types.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** Host facts for check: --domcaps if given, else the host cache if present, else virsh. */
export function checkHostFacts(io: Io, args: Record<string, unknown>): HostFacts {
  const cache = (args['cache'] as string | undefined) ?? join(stateDirOf(io.env), CACHE_FILE);
  if (args['domcaps'] === undefined && (args['cache'] !== undefined || existsSync(cache)))
    return hostFactsFromCache(readHostCache(cache), cache);
  return hostFacts({
    domcaps: args['domcaps'] as string | undefined,
    firmwareDirs: firmwareDirsFrom(io, args['firmware-dirs']),
    run: io.run,
  });
}

export const checkCommand: CommandSpec = {
  command: 'check [file]',
  describe: 'list every SEV rule a tagged (or launchSecurity) domain breaks; exit 1 if any',
  builder: (y) =>
    hostOptions(y)
      .positional('file', { type: 'string', describe: 'domain XML file (default: stdin)' })
      .option('cache', { type: 'string', describe: `host cache written by \`host --write-cache\` (default: ${DEFAULT_STATE_DIR}/${CACHE_FILE} when present)` })
      .option('qemu-overhead', {
        type: 'string',
        describe: `QEMU's own memory above what SEV pins, with a unit, e.g. 512MiB (default: qemu_overhead_mib in hook.conf, as the hook counts it, else ${DEFAULT_QEMU_OVERHEAD_MIB}MiB)`,
      })
      .example('virsh dumpxml VM | $0 check', 'is VM a correct SEV guest?'),
  async run(io, args) {
    const input = await readInput(io, args['file'] as string | undefined);
    // The hook's overhead unless told otherwise, so that check and the hook agree on the hard_limit.
    const option = args['qemu-overhead'];
    const qemuOverheadKiB =
      typeof option === 'string' ? parseOverheadSize(option, '--qemu-overhead') : readHookConfig(hookPaths(io).config).qemuOverheadMiB * 1024;
    const result = checkDomain(input, checkHostFacts(io, args), { ...CHECK_OPTIONS, qemuOverheadKiB });
    if (!result.sev) {
      io.stdout('not an SEV domain (no sev-xform tag, no launchSecurity): nothing to check\n');
      return 0;
    }
    if (result.problems.length === 0) {
      io.stdout('a correct SEV guest\n');
      return 0;
    }
    for (const p of result.problems) io.stdout(p + '\n');
    return 1;
  },
};
