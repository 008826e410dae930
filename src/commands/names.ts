// The sub-command names, without loading the commands: the filter's fast path in cli.ts must tell
// `sev-xform check FILE` from `sev-xform FILE` without loading yargs and every command module.
// test/unit/cli-fast-path.test.ts checks this list against COMMANDS.

/** Every sub-command except the filter (`transform`, also the default command). */
export const SUBCOMMAND_NAMES: ReadonlySet<string> = new Set(['check', 'host', 'apply', 'plan', 'hook']);
