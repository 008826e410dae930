import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const FIXTURES = 'fixtures';

/** Golden case folders: fixtures/<case>/ with an in.xml. */
export function goldenCases(): string[] {
  return readdirSync(FIXTURES)
    .filter((d) => existsSync(join(FIXTURES, d, 'in.xml')))
    .sort();
}
