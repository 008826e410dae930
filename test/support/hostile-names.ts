// Domain names that look like options to a command-line parser: libvirt accepts
// them (anything without '/' or newline), and the hook must take them as data.
// Both hook-attack suites use them, each adding cases of its own.
export const OPTION_LIKE_NAMES: readonly string[] = [
  '--help',
  '--domain=x',
  '--operation=x',
  '--extra=',
  '--no-extra',
  '--help=false',
  '--no-help',
  '--_',
  '--get-yargs-completions',
  '-web',
  '--',
  '-h',
  '-',
  '',
];
