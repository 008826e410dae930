// Every sub-command, in the order --help lists them.
import { transformCommand } from './transform.js';
import { checkCommand } from './check.js';
import type { CommandSpec } from './types.js';

export const COMMANDS: readonly CommandSpec[] = [transformCommand, checkCommand];
