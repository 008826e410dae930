import { runHook } from '../hook/run.js';
import { DEFAULT_RESERVE_MIB } from '../hook/config.js';
import type { CommandSpec } from './types.js';

export const hookCommand: CommandSpec = {
  command: 'hook <domain> <operation> [sub-operation] [extra]',
  describe: "libvirt's qemu hook (installed as /etc/libvirt/hooks/qemu.d/sev-xform): refuses to start a tagged domain unencrypted, beyond the host's SEV slots or memory, and to migrate or restore an SEV domain",
  builder: (y) =>
    y
      // Strings, so that a domain called 123 is not turned into a number.
      .positional('domain', { type: 'string', describe: 'domain name' })
      .positional('operation', { type: 'string', describe: 'prepare, migrate, restore act; every other operation exits 0 at once' })
      .positional('sub-operation', { type: 'string', describe: "'begin' for the operations that act" })
      .positional('extra', { type: 'string', describe: "'-' (unused)" })
      .epilog(
        [
          'The domain XML is read from stdin. Never calls libvirt: host facts come from',
          '$SEV_XFORM_STATE_DIR/host.json (default /var/lib/sev-xform/host.json, written by',
          '`sev-xform host --write-cache`), running domains from $SEV_XFORM_RUN_DIR (default',
          '/run/libvirt/qemu), settings from $SEV_XFORM_HOOK_CONF (default /etc/sev-xform/hook.conf,',
          `\`key = value\` lines; reserve_mib = MiB of host memory SEV guests may not pin, default ${DEFAULT_RESERVE_MIB}).`,
          'A domain with neither the sev-xform tag nor <launchSecurity> is never blocked by a',
          'missing or broken file; an SEV domain is refused, naming the file. Concurrent prepares',
          'are serialised by a lock in $SEV_XFORM_LOCK_DIR (default /run/sev-xform), which also',
          'holds the reservations that started, stopped and release drop.',
          '',
          "libvirt's form: `hook` followed by exactly four arguments takes them verbatim, so a",
          'domain called --help or - is a name, never an option (the shim always passes four).',
        ].join('\n'),
      )
      .example('virsh dumpxml VM | $0 hook VM prepare begin -', 'would libvirt be allowed to start VM?'),
  async run(io, args) {
    const libvirtArgs = [args['domain'], args['operation'], args['sub-operation'], args['extra']]
      .filter((a) => a !== undefined)
      .map(String);
    return runHook(libvirtArgs, io);
  },
};
