// The sample of generated domains the integration tests convert (the property
// tests' generator, fixed seed): every tagged, schema-valid input that the
// built binary converts. generated.test.ts checks the outputs against the
// schema, qemu-acceptance.test.ts starts each in QEMU.
import fc from 'fast-check';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runBin } from './bin.js';
import { buildDomain, domainModelArb, renderDomain } from './gen-domain.js';
import { validateSchema } from './libvirt.js';
import type { Stack } from './stack.js';

export const SEED = Number(process.env['SEV_XFORM_PROPS_SEED'] ?? 20261126);
export const SAMPLE = 400;
/** The host the sample is converted for: an SEV EPYC Rome's domcapabilities and firmware descriptors. */
export const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];

export interface GeneratedConversion {
  /** Index in the sample: with SEED, names a reproducible case. */
  index: number;
  options: string[];
  input: string;
  /** File holding the converted domain (in `dir`). */
  file: string;
}

/**
 * Converts the sample into `dir`: `gen-N.xml` for each tagged, schema-valid
 * input the binary accepts (a refusal is the property tests' business);
 * schema-valid for `stack`'s libvirt (default Debian 12's).
 */
export function generatedConversions(dir: string, stack?: Stack): GeneratedConversion[] {
  const models = fc.sample(
    domainModelArb.map((m) => ({ ...m, unknownAttrs: [], unknownChildren: [] })),
    { seed: SEED, numRuns: SAMPLE },
  );
  const out: GeneratedConversion[] = [];
  models.forEach((m, index) => {
    if (!m.tag) return;
    const input = renderDomain(buildDomain(m), m.layout);
    const inputFile = join(dir, `gen-${index}-in.xml`);
    writeFileSync(inputFile, input);
    if (validateSchema(inputFile, stack).code !== 0) return;
    const r = runBin([...HOST, ...m.options], { input });
    if (r.code !== 0) return;
    const file = join(dir, `gen-${index}.xml`);
    writeFileSync(file, r.stdout);
    out.push({ index, options: m.options, input, file });
  });
  return out;
}
