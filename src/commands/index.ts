// Every sub-command, in the order --help lists them.
import { transformCommand } from './transform.js';
import { checkCommand } from './check.js';
import { hostCommand } from './host.js';
import { hookCommand } from './hook.js';
import { applyCommand } from './apply.js';
import { planCommand } from './plan.js';
import type { CommandSpec } from './types.js';

export const COMMANDS: readonly CommandSpec[] = [transformCommand, checkCommand, hostCommand, applyCommand, planCommand, hookCommand];
